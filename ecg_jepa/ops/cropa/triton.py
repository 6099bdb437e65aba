"""The ``triton`` CroPA backend: launchers for ``ecg_jepa.kernels.cropa_fwd`` / ``cropa_bwd``, registered
as ``ecg_jepa::cropa_triton_fwd`` / ``_bwd`` (see :mod:`.fused`).

This module is imported on the first call of the backend, never by ``import ecg_jepa``: under
``TRITON_INTERPRET=1`` the kernels run on CPU tensors (tests), otherwise on CUDA tensors.
"""
from __future__ import annotations

import torch
import triton

from ..registry import device_guard, interpreter_active
from .fused import register

LOG2E = 1.4426950408889634


def _launch_config(n_slots: int, head_dim: int, dtype: torch.dtype) -> dict:
    """Tile sizes: one tile covers a whole lead for T ≤ 64 (the ECG case), d padded to a power of two."""
    block = min(64, max(16, triton.next_power_of_2(n_slots)))
    block_d = max(16, triton.next_power_of_2(head_dim))
    return dict(
        BLOCK_M=block,
        BLOCK_N=block,
        BLOCK_D=block_d,
        UPCAST=interpreter_active(),
        DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32",
        num_warps=4 if block_d <= 64 else 8,
    )


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(2)


def _unit_last(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_leads: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, H, N, d) q, k, v -> out (B, H, N, d) and merged log-sum-exp (B, H, N) fp32."""
    from ecg_jepa.kernels.cropa_fwd import cropa_fwd_kernel

    q, k, v = _unit_last(q), _unit_last(k), _unit_last(v)
    b, h, n, d = q.shape
    t = n // n_leads
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty((b, h, n), device=q.device, dtype=torch.float32)
    cfg = _launch_config(t, d, q.dtype)
    grid = (triton.cdiv(t, cfg["BLOCK_M"]), b * h * n_leads)
    with device_guard(q):
        cropa_fwd_kernel[grid](
            q, k, v, out, lse, *_strides(q), *_strides(k), *_strides(v), *_strides(out),
            h, n_leads, t, d, scale * LOG2E, **cfg,
        )
    return out, lse


def backward(
    grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
    n_leads: int, scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dq, dk, dv), each (B, H, N, d), from dO and the forward's out and merged LSE."""
    from ecg_jepa.kernels.cropa_bwd import cropa_bwd_dkdv_kernel, cropa_bwd_dq_kernel

    grad_out, q, k, v = (_unit_last(x) for x in (grad_out, q, k, v))
    b, h, n, d = q.shape
    t = n // n_leads
    delta = (grad_out.float() * out.float()).sum(-1).contiguous()  # rowsum(dO ∘ O), (B, H, N)
    lse = lse.contiguous()
    dq, dk, dv = (torch.empty_like(x, memory_format=torch.contiguous_format) for x in (q, k, v))
    cfg = _launch_config(t, d, q.dtype)
    common = (*_strides(q), *_strides(k), *_strides(v), *_strides(grad_out))
    with device_guard(q):
        cropa_bwd_dq_kernel[(triton.cdiv(t, cfg["BLOCK_M"]), b * h * n_leads)](
            q, k, v, grad_out, dq, lse, delta, *common, *_strides(dq), h, n_leads, t, d, scale, **cfg
        )
        cropa_bwd_dkdv_kernel[(triton.cdiv(t, cfg["BLOCK_N"]), b * h * n_leads)](
            q, k, v, grad_out, dk, dv, lse, delta, *common, *_strides(dk), *_strides(dv),
            h, n_leads, t, d, scale, **cfg,
        )
    return dq, dk, dv


attention, cropa_triton_fwd, cropa_triton_bwd = register("triton", forward, backward)
