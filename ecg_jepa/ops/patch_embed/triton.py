"""The ``triton`` patch-embedding backend: launchers for ``ecg_jepa.kernels.patch_embed``, registered as
``ecg_jepa::patch_embed_triton`` / ``_dx`` (see :mod:`.fused`). Imported on the backend's first call."""
from __future__ import annotations

import torch
import triton

from ..registry import device_guard, interpreter_active
from .fused import register

_BLOCK_T = 32


def _config(dim: int, patch: int, dtype: torch.dtype) -> dict:
    return dict(
        BLOCK_T=_BLOCK_T,
        BLOCK_D=min(64, max(16, triton.next_power_of_2(dim))),
        BLOCK_P=max(16, triton.next_power_of_2(patch)),
        UPCAST=interpreter_active(),
        DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32",
        num_warps=4,
    )


def forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, pos: torch.Tensor, vis: torch.Tensor,
    lead_ids: torch.Tensor,
) -> torch.Tensor:
    """x (B, L, S), weight (D, P), bias (D,), pos (rows, D), vis (1 or B, T_vis) int32, lead_ids (L,) int32
    -> (B, L·T_vis, D)."""
    from ecg_jepa.kernels.patch_embed import patch_embed_fwd_kernel

    x, weight, pos, vis = x.contiguous(), weight.contiguous(), pos.contiguous(), vis.contiguous()
    b, n_leads, samples = x.shape
    dim, patch = weight.shape
    n_tok = n_leads * vis.shape[1]
    out = torch.empty((b, n_tok, dim), device=x.device, dtype=x.dtype)
    cfg = _config(dim, patch, x.dtype)
    with device_guard(x):
        patch_embed_fwd_kernel[(triton.cdiv(n_tok, _BLOCK_T), b)](
            x, weight, bias, pos, vis, lead_ids, out,
            x.stride(0), x.stride(1), weight.stride(0), pos.stride(0), vis.stride(0) if vis.shape[0] > 1 else 0,
            out.stride(0), out.stride(1),
            vis.shape[1], samples // patch, n_tok, dim, patch, **cfg,
        )
    return out


def dx(grad: torch.Tensor, weight: torch.Tensor, vis: torch.Tensor, x_shape: list[int]) -> torch.Tensor:
    """dY (B, L·T_vis, D) -> dx (B, L, S): dY·W at each visible patch, zero at hidden slots."""
    from ecg_jepa.kernels.patch_embed import patch_embed_dx_kernel

    grad, weight, vis = grad.contiguous(), weight.contiguous(), vis.contiguous()
    b, n_leads, samples = x_shape
    dim, patch = weight.shape
    n_tok = grad.shape[1]
    grad_x = torch.zeros(x_shape, device=grad.device, dtype=grad.dtype)
    cfg = _config(dim, patch, grad.dtype)
    with device_guard(grad):
        patch_embed_dx_kernel[(triton.cdiv(n_tok, _BLOCK_T), b)](
            grad, weight, vis, grad_x,
            grad.stride(0), grad.stride(1), weight.stride(0), vis.stride(0) if vis.shape[0] > 1 else 0,
            grad_x.stride(0), grad_x.stride(1),
            vis.shape[1], n_tok, dim, patch, **cfg,
        )
    return grad_x


patch_embed_triton, patch_embed_triton_dx = register("triton", forward, dx)
