"""The ``cuda`` CroPA backend: the ``csrc/`` extension's ``ecg_jepa::cropa_cuda_fwd`` / ``_bwd`` ops,
loaded ahead of time (``ecg_jepa._C``) or built just in time on first use, completed with the same fake
implementation and autograd as every fused backend (:mod:`.fused`).

The kernels keep a CTA's working set in shared memory (csrc/cropa_attention.cu): :func:`shared_memory`
mirrors their layout so that the dispatcher can tell, from a description of the inputs alone, whether a
problem fits a GPU (a test checks the mirror against the C++ layout, compiled for the CPU).
"""
from __future__ import annotations

import torch

from ... import build_ext
from .fused import register

_ops: dict = {}

TILE = 16
# Shared memory a CTA may use (cudaDevAttrMaxSharedMemoryPerBlockOptin), by compute capability, for
# devices described rather than present.
SMEM_PER_CTA = {(8, 0): 166912, (8, 6): 101376, (8, 9): 101376, (9, 0): 232448, (10, 0): 232448, (12, 0): 101376}


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


def smem_limit(capability: tuple[int, int] | None, device: torch.device | None = None) -> int | None:
    """The shared memory a CTA may use on the device (queried when present, else from the table)."""
    if device is not None and device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return getattr(props, "shared_memory_per_block_optin", None) or SMEM_PER_CTA.get(capability)
    return SMEM_PER_CTA.get(capability) if capability is not None else None


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
