"""The ``triton`` CroPA backend: launchers for ``ecg_jepa.kernels.cropa_fwd`` / ``cropa_bwd``, registered
as ``ecg_jepa::cropa_triton_fwd`` / ``_bwd`` (see :mod:`.fused`).

Compiled variants are bounded: the kernels do not specialize on L or T (runtime loop bounds), and T
only picks a slot tile, BLOCK_T in :data:`SLOT_TILES`, so a training run whose visible slot count changes
every step meets at most ``len(SLOT_TILES)`` variants per (dtype, head dim) and can warm them all up front
(:func:`warm_up`).

This module is imported on the first call of the backend, never by ``import ecg_jepa``: under
``TRITON_INTERPRET=1`` the kernels run on CPU tensors (tests), otherwise on CUDA tensors.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton

from ..registry import device_guard, interpreter_active
from .fused import LOG2E, register, strides3, unit_last

SLOT_TILES = (16, 32, 64)
"""The slot tiles: T ≤ 16 -> 16, T ≤ 32 -> 32, otherwise 64 (T > 64 loops over blocks of 64)."""


@dataclass(frozen=True)
class Config:
    """One launch configuration (everything the kernels take as compile-time constants)."""

    block_t: int
    bwd_block_t: int
    block_d: int
    lanes: int
    leads_per_program: int
    num_warps: int
    bwd_num_warps: int
    upcast: bool
    dot_precision: str


def slot_tile(n_slots: int, largest: int = SLOT_TILES[-1]) -> int:
    """The slot tile for T slots per lead (at most ``largest``)."""
    return next((tile for tile in SLOT_TILES if n_slots <= tile or tile == largest), largest)


def config(n_leads: int, n_slots: int, head_dim: int, dtype: torch.dtype, arch: int = 90) -> Config:
    """The launch configuration for an (L, T, d, dtype) problem on an sm_``arch`` GPU (90: H100); d padded
    to a power of two ≥ 16.

    Chosen by ``python -m ecg_jepa.benchmarks.tune_cropa`` on an H100 (bf16, B=64, H=16, d=48; results in
    ``benchmarks/results/h100-20261126/``, its tuning sweep holds the times): forward one program per
    (batch, head, lead) (one lead per program beat all of a head's leads in one at L8 T50 and L12 T50; the
    other leads' K and V rows come from L2), 64-slot tiles, 4 warps; backward 64-slot tiles with 4 warps
    where T > 32 (faster than 32-slot tiles and than 8 warps at L8 T50) on sm_90, 32-slot tiles
    before sm_90 (the 64-slot backward spills there: ``python -m ecg_jepa.kernel_report``). d = 128 takes 32-slot
    tiles and 8 warps (not measured yet). fp32 is the exact, slow path: IEEE fp32 products on the CUDA cores
    (no tf32), 16-slot tiles forward, 32-slot tiles (16 at d = 128) with 8 warps backward.
    """
    block_d = max(16, triton.next_power_of_2(head_dim))
    fp32 = dtype == torch.float32
    if fp32:
        fwd_tile, bwd_tile = 16, 16 if block_d > 64 else 32
    elif block_d > 64:
        fwd_tile, bwd_tile = 32, 32
    else:
        fwd_tile, bwd_tile = 64, 64 if arch >= 90 else 32
    warps = 8 if block_d > 64 else 4
    return Config(
        block_t=slot_tile(n_slots, fwd_tile),
        bwd_block_t=slot_tile(n_slots, bwd_tile),
        block_d=block_d,
        lanes=max(2, triton.next_power_of_2(n_leads)),
        leads_per_program=1,
        num_warps=warps,
        bwd_num_warps=8 if fp32 else warps,
        upcast=interpreter_active(),
        dot_precision="ieee",
    )


@functools.lru_cache(maxsize=None)
def _device_arch(index: int) -> int:
    major, minor = torch.cuda.get_device_capability(index)
    return 10 * major + minor


def arch_of(x: torch.Tensor) -> int:
    """The sm of the GPU holding x (90 for CPU tensors: the interpreter runs any configuration)."""
    return _device_arch(x.device.index if x.device.index is not None else torch.cuda.current_device()) if x.is_cuda else 90


def fwd_launch(q, k, v, out, lse, n_leads: int, scale: float, cfg: Config):
    """(kernel, grid, args, kwargs) of the forward launch (also what ``ecg_jepa.kernel_report`` compiles)."""
    from ecg_jepa.kernels.cropa_fwd import cropa_fwd_kernel

    b, h, n, d = q.shape
    groups = triton.cdiv(n_leads, cfg.leads_per_program)
    args = (q, k, v, out, lse, *strides3(q), *strides3(k), *strides3(v), *strides3(out),
            h, n_leads, n // n_leads, scale * LOG2E)
    kwargs = dict(HEAD_DIM=d, BLOCK_T=cfg.block_t, BLOCK_D=cfg.block_d, LANES=cfg.lanes,
                  LEADS_PER_PROGRAM=cfg.leads_per_program, UPCAST=cfg.upcast, DOT_PRECISION=cfg.dot_precision,
                  num_warps=cfg.num_warps, num_stages=1)
    return cropa_fwd_kernel, (b * h * groups,), args, kwargs


def bwd_launch(grad_out, q, k, v, out, lse, delta, dq, dk, dv, n_leads: int, scale: float, cfg: Config):
    """(kernel, grid, args, kwargs) of the backward launch."""
    from ecg_jepa.kernels.cropa_bwd import cropa_bwd_kernel

    b, h, n, d = q.shape
    args = (q, k, v, out, grad_out, lse, delta, dq, dk, dv,
            *strides3(q), *strides3(k), *strides3(v), *strides3(out), *strides3(grad_out),
            *strides3(dq), *strides3(dk), *strides3(dv), h, n_leads, n // n_leads, scale, scale * LOG2E)
    kwargs = dict(HEAD_DIM=d, BLOCK_T=cfg.bwd_block_t, BLOCK_D=cfg.block_d, UPCAST=cfg.upcast,
                  DOT_PRECISION=cfg.dot_precision, num_warps=cfg.bwd_num_warps, num_stages=1)
    return cropa_bwd_kernel, (b * h,), args, kwargs


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_leads: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, H, N, d) q, k, v -> out (B, H, N, d) and merged log-sum-exp (B, H, N) fp32."""
    q, k, v = unit_last(q), unit_last(k), unit_last(v)
    b, h, n, d = q.shape
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty((b, h, n), device=q.device, dtype=torch.float32)
    cfg = config(n_leads, n // n_leads, d, q.dtype, arch_of(q))
    kernel, grid, args, kwargs = fwd_launch(q, k, v, out, lse, n_leads, scale, cfg)
    with device_guard(q):
        kernel[grid](*args, **kwargs)
    return out, lse


def backward(
    grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
    n_leads: int, scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dq, dk, dv), each (B, H, N, d), from dO and the forward's out and merged LSE."""
    grad_out, q, k, v, out = (unit_last(x) for x in (grad_out, q, k, v, out))
    b, h, n, d = q.shape
    lse = lse.contiguous()
    delta = torch.empty_like(lse)  # rowsum(dO ∘ O), written and read by the kernel
    dq, dk, dv = (torch.empty_like(x, memory_format=torch.contiguous_format) for x in (q, k, v))
    cfg = config(n_leads, n // n_leads, d, q.dtype, arch_of(q))
    kernel, grid, args, kwargs = bwd_launch(grad_out, q, k, v, out, lse, delta, dq, dk, dv, n_leads, scale, cfg)
    with device_guard(q):
        kernel[grid](*args, **kwargs)
    return dq, dk, dv


attention, cropa_triton_fwd, cropa_triton_bwd = register("triton", forward, backward)


def warm_up(device: torch.device | str, dtype: torch.dtype, head_dim: int, heads: int, n_leads: int,
            grad: bool = True) -> int:
    """Compile (by running once, on a batch of one) every slot-tile variant of the kernels for inputs laid
    out as :class:`~ecg_jepa.CroPAAttention` makes them (views of one qkv projection, so the strides'
    specializations match), so no compilation lands in a timed or training step. Returns the count."""
    for tile in SLOT_TILES:
        qkv = torch.randn(1, n_leads * tile, 3, heads, head_dim, device=device, dtype=dtype, requires_grad=grad)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = attention(q, k, v, n_leads, head_dim ** -0.5)
        if grad:
            out.sum().backward()
    return len(SLOT_TILES)
