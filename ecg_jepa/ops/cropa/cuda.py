"""The ``cuda`` CroPA backend: the ``csrc/`` extension's ``ecg_jepa::cropa_cuda_fwd`` / ``_bwd`` ops,
loaded ahead of time (``ecg_jepa._C``) or built just in time on first use, completed with the same fake
implementation and autograd as every fused backend (:mod:`.fused`).

The kernels keep a CTA's working set in shared memory (csrc/cropa_attention.cu): :func:`shared_memory`
mirrors their layout and :func:`plan` their choices (the forward's staging, the backward's leads per CTA), so that the dispatcher and the kernel
report can tell, from a description of the inputs alone, whether and how a problem fits a GPU (a test
checks the mirror against the C++ plan, compiled for the CPU).
"""
from __future__ import annotations

import torch

from ... import build_ext
from ...limits import CUDA_CTAS_PER_SM
from ...limits import CUDA_TILE as TILE
from .fused import register

_ops: dict = {}


def _carve(*sizes: int) -> int:
    """Bytes of consecutive regions each rounded up to 128 (csrc/block.cuh Carve)."""
    return sum((s + 127) // 128 * 128 for s in sizes)


FWD_PAD = 8
"""Elements of padding per staged key/value row of the forward (csrc/cropa_attention.cu kFwdPad)."""


def shared_memory(leads: int, slots: int, group: int, head_dim: int, element_size: int) -> tuple[int, int]:
    """(forward, backward) shared bytes: the forward CTA holds every key and value of one (batch, head)
    (csrc fwd_smem_bytes); a backward CTA owns ``group`` of ``leads`` leads (csrc BwdSmem)."""
    dp = (head_dim + TILE - 1) // TILE * TILE
    tile, sq = TILE * dp, TILE * TILE
    fwd = 2 * leads * slots * (dp + FWD_PAD) * element_size
    bwd = _carve(*[group * tile * element_size] * 4, *[leads * tile * element_size] * 2, *[group * tile * 4] * 2,
                 group * sq * 4, group * sq * 4, group * sq * element_size, group * sq * element_size,
                 *[group * TILE * 4] * 4, leads * TILE * 4, leads * TILE * 4)
    return fwd, bwd


def plan(leads: int, slots: int, head_dim: int, element_size: int, limit: int) -> tuple[int, int, int]:
    """(forward shared bytes, backward leads per CTA, backward shared bytes) on a GPU allowing ``limit``
    bytes per CTA, as csrc ``attention_plan`` decides them: the forward's bytes, 0 if they exceed the limit
    or the data is float32 (the tensor-core forward takes 16-bit data); for the backward the most leads that
    leave room for :data:`~ecg_jepa.limits.CUDA_CTAS_PER_SM` CTAs per SM, else the most that fit, else 0
    (and 0 bytes): does not fit."""
    def bwd_bytes(group: int) -> int:
        return shared_memory(leads, slots, group, head_dim, element_size)[1] if group else 0

    fwd = shared_memory(leads, slots, 1, head_dim, element_size)[0]
    fwd = fwd if element_size == 2 and fwd <= limit else 0
    bwd = next((g for budget in (limit // CUDA_CTAS_PER_SM, limit) for g in range(leads, 0, -1)
                if bwd_bytes(g) <= budget), 0)
    return fwd, bwd, bwd_bytes(bwd)


def fits(leads: int, slots: int, head_dim: int, dtype: torch.dtype, limit: int) -> str | None:
    """None when the forward CTA and a one-lead backward CTA fit ``limit`` bytes of shared memory and the
    data is 16-bit, else why not."""
    if dtype == torch.float32:
        return "float32: the CUDA forward runs on tensor cores (float16, bfloat16 only)"
    fwd, bwd = shared_memory(leads, slots, 1, head_dim, torch.finfo(dtype).bits // 8)
    if fwd > limit:
        return (f"the forward stages the head's keys and values ({leads} leads x {slots} slots, "
                f"{fwd // 1024} KB) in shared memory; the GPU allows {limit // 1024} KB per CTA")
    return None if bwd <= limit else f"the backward needs {bwd // 1024} KB of shared memory per CTA, the GPU allows {limit // 1024} KB"


def _attention():
    if "attention" not in _ops:
        build_ext.load()
        _ops["attention"], _ops["fwd"], _ops["bwd"] = register("cuda")
    return _ops["attention"]


def ops():
    """(fwd op, bwd op), loading the extension first."""
    _attention()
    return _ops["fwd"], _ops["bwd"]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_leads: int, scale: float) -> torch.Tensor:
    """(B, H, N, d) -> (B, H, N, d) through the CUDA extension."""
    return _attention()(q, k, v, n_leads, scale)
