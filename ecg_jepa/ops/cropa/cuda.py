"""The ``cuda`` CroPA backend: the ``csrc/`` extension's ``ecg_jepa::cropa_cuda_fwd`` / ``_bwd`` ops,
loaded ahead of time (``ecg_jepa._C``) or built just in time on first use, completed with the same fake
implementation and autograd as every fused backend (:mod:`.fused`).

The kernels keep a CTA's working set in shared memory (csrc/cropa_attention.cu): :func:`shared_memory`
mirrors their layout and :func:`plan` their choices (both stage a whole (batch, head) per CTA), so that the
dispatcher and the kernel report can tell, from a description of the inputs alone, whether and how a problem fits a GPU (a test
checks the mirror against the C++ plan, compiled for the CPU).
"""
from __future__ import annotations

import torch

from ... import build_ext
from ...limits import CUDA_TILE as TILE
from .fused import register

_ops: dict = {}


FWD_PAD = 8
"""Elements of padding per staged key/value row of the forward (csrc/cropa_attention.cu kFwdPad)."""


def shared_memory(leads: int, slots: int, head_dim: int, element_size: int) -> tuple[int, int]:
    """(forward, backward) shared bytes of a CTA, which holds one (batch, head): the forward its keys and
    values (csrc fwd_smem_bytes), the backward the same two staged copies (K, V, then Q, dO) plus the
    head's LSE and Delta in fp32 (csrc bwd_smem_bytes)."""
    dp = (head_dim + TILE - 1) // TILE * TILE
    fwd = 2 * leads * slots * (dp + FWD_PAD) * element_size
    return fwd, fwd + 2 * leads * slots * 4


def plan(leads: int, slots: int, head_dim: int, element_size: int, limit: int) -> tuple[int, int, int]:
    """(forward shared bytes, backward leads per CTA, backward shared bytes) on a GPU allowing ``limit``
    bytes per CTA, as csrc ``attention_plan`` decides them: each kernel's bytes, 0 if they exceed the limit
    or the data is float32 (the tensor-core kernels take 16-bit data); the backward's leads are all of them
    (a CTA per (batch, head)), 0 where it does not fit."""
    fwd, bwd = shared_memory(leads, slots, head_dim, element_size)
    fwd = fwd if element_size == 2 and fwd <= limit else 0
    fits_bwd = element_size == 2 and bwd <= limit
    return fwd, leads if fits_bwd else 0, bwd if fits_bwd else 0


def fits(leads: int, slots: int, head_dim: int, dtype: torch.dtype, limit: int) -> str | None:
    """None when the forward and backward CTAs fit ``limit`` bytes of shared memory and the data is 16-bit,
    else why not."""
    if dtype == torch.float32:
        return "float32: the CUDA kernels run on tensor cores (float16, bfloat16 only)"
    fwd, bwd = shared_memory(leads, slots, head_dim, torch.finfo(dtype).bits // 8)
    if fwd > limit:
        return (f"the forward stages the head's keys and values ({leads} leads x {slots} slots, "
                f"{fwd // 1024} KB) in shared memory; the GPU allows {limit // 1024} KB per CTA")
    if bwd > limit:
        return (f"the backward stages two of the head's matrices and its LSE and Delta ({leads} leads x {slots} "
                f"slots, {bwd // 1024} KB) in shared memory; the GPU allows {limit // 1024} KB per CTA")
    return None


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
