"""The ``cuda`` CroPA backend: the ``csrc/`` extension's ``ecg_jepa::cropa_cuda_fwd`` / ``_bwd`` ops,
loaded ahead of time (``ecg_jepa._C``) or built just in time on first use, completed with the same fake
implementation and autograd as every fused backend (:mod:`.fused`).

The kernels keep a CTA's working set in shared memory (csrc/cropa_attention.cu): :func:`shared_memory`
mirrors their layout and :func:`plan` their choice of leads per CTA, so that the dispatcher and the kernel
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


def shared_memory(leads: int, group: int, head_dim: int, element_size: int) -> tuple[int, int]:
    """(forward, backward) shared bytes of one CTA owning ``group`` of ``leads`` leads (csrc FwdSmem, BwdSmem)."""
    dp = (head_dim + TILE - 1) // TILE * TILE
    tile, sq = TILE * dp, TILE * TILE
    fwd = _carve(group * tile * element_size, group * tile * element_size, group * tile * element_size,
                 leads * tile * element_size, leads * tile * element_size, group * sq * 4, group * sq * element_size,
                 group * tile * 4, group * TILE * leads * 4, group * TILE * 4, group * TILE * 4)
    bwd = _carve(*[group * tile * element_size] * 4, *[leads * tile * element_size] * 2, *[group * tile * 4] * 2,
                 group * sq * 4, group * sq * 4, group * sq * element_size, group * sq * element_size,
                 *[group * TILE * 4] * 4, leads * TILE * 4, leads * TILE * 4)
    return fwd, bwd


def plan(leads: int, head_dim: int, element_size: int, limit: int) -> tuple[int, int, int, int]:
    """(forward leads per CTA, backward leads per CTA, forward shared bytes, backward shared bytes) on a GPU
    allowing ``limit`` bytes per CTA, as csrc ``attention_plan`` decides them: per pass the most leads that
    leave room for :data:`~ecg_jepa.limits.CUDA_CTAS_PER_SM` CTAs per SM, else the most that fit, else 0
    (and 0 bytes): does not fit."""
    def bytes_of(group: int, index: int) -> int:
        return shared_memory(leads, group, head_dim, element_size)[index] if group else 0

    def best(index: int) -> int:
        return next((g for budget in (limit // CUDA_CTAS_PER_SM, limit) for g in range(leads, 0, -1)
                     if bytes_of(g, index) <= budget), 0)

    fwd, bwd = best(0), best(1)
    return fwd, bwd, bytes_of(fwd, 0), bytes_of(bwd, 1)


def fits(leads: int, head_dim: int, dtype: torch.dtype, limit: int) -> str | None:
    """None when one lead per CTA fits ``limit`` bytes of shared memory (forward and backward), else why not."""
    need = max(shared_memory(leads, 1, head_dim, torch.finfo(dtype).bits // 8))
    return None if need <= limit else f"needs {need // 1024} KB of shared memory per CTA, the GPU allows {limit // 1024} KB"


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
