"""The ``triton`` patch-embedding backend: launchers for ``ecg_jepa.kernels.patch_embed``, registered as
``ecg_jepa::patch_embed_triton`` / ``_dx`` (see :mod:`.fused`). Imported on the backend's first call."""
from __future__ import annotations

import torch
import triton

from ..registry import device_guard, interpreter_active
from .fused import register


def _block_t(dtype: torch.dtype) -> int:
    """Tokens per program: 32, or 16 for fp32, whose IEEE products run on the CUDA cores and need more
    registers (no spills either way: ``python -m ecg_jepa.kernel_report``)."""
    return 16 if dtype == torch.float32 else 32


def _config(dim: int, patch: int, dtype: torch.dtype) -> dict:
    return dict(
        BLOCK_T=_block_t(dtype),
        BLOCK_D=min(64, max(16, triton.next_power_of_2(dim))),
        BLOCK_P=max(16, triton.next_power_of_2(patch)),
        UPCAST=interpreter_active(),
        DOT_PRECISION="ieee",
        num_warps=4,
    )


def _vis_stride(vis: torch.Tensor) -> int:
    return vis.stride(0) if vis.shape[0] > 1 else 0


def fwd_launch(x, weight, bias, pos, vis, lead_ids, out):
    """(kernel, grid, args, kwargs) of the forward launch (also what ``ecg_jepa.kernel_report`` compiles)."""
    from ecg_jepa.kernels.patch_embed import patch_embed_fwd_kernel

    b, n_leads, samples = x.shape
    dim, patch = weight.shape
    n_tok = n_leads * vis.shape[1]
    args = (x, weight, bias, pos, vis, lead_ids, out,
            x.stride(0), x.stride(1), weight.stride(0), pos.stride(0), _vis_stride(vis), out.stride(0), out.stride(1),
            vis.shape[1], samples // patch, n_tok, dim, patch)
    return patch_embed_fwd_kernel, (triton.cdiv(n_tok, _block_t(x.dtype)), b), args, _config(dim, patch, x.dtype)


def dx_launch(grad, weight, vis, grad_x):
    """(kernel, grid, args, kwargs) of the dx launch."""
    from ecg_jepa.kernels.patch_embed import patch_embed_dx_kernel

    dim, patch = weight.shape
    n_tok = grad.shape[1]
    args = (grad, weight, vis, grad_x,
            grad.stride(0), grad.stride(1), weight.stride(0), _vis_stride(vis), grad_x.stride(0), grad_x.stride(1),
            vis.shape[1], n_tok, dim, patch)
    return patch_embed_dx_kernel, (triton.cdiv(n_tok, _block_t(grad.dtype)), grad.shape[0]), args, _config(dim, patch, grad.dtype)


def forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, pos: torch.Tensor, vis: torch.Tensor,
    lead_ids: torch.Tensor,
) -> torch.Tensor:
    """x (B, L, S), weight (D, P), bias (D,), pos (rows, D), vis (1 or B, T_vis) int32, lead_ids (L,) int32
    -> (B, L·T_vis, D)."""
    x, weight, pos, vis = x.contiguous(), weight.contiguous(), pos.contiguous(), vis.contiguous()
    out = torch.empty((x.shape[0], x.shape[1] * vis.shape[1], weight.shape[0]), device=x.device, dtype=x.dtype)
    kernel, grid, args, kwargs = fwd_launch(x, weight, bias, pos, vis, lead_ids, out)
    with device_guard(x):
        kernel[grid](*args, **kwargs)
    return out


def dx(grad: torch.Tensor, weight: torch.Tensor, vis: torch.Tensor, x_shape: list[int]) -> torch.Tensor:
    """dY (B, L·T_vis, D) -> dx (B, L, S): dY·W at each visible patch, zero at hidden slots."""
    grad, weight, vis = grad.contiguous(), weight.contiguous(), vis.contiguous()
    grad_x = torch.zeros(x_shape, device=grad.device, dtype=grad.dtype)
    kernel, grid, args, kwargs = dx_launch(grad, weight, vis, grad_x)
    with device_guard(grad):
        kernel[grid](*args, **kwargs)
    return grad_x


patch_embed_triton, patch_embed_triton_dx = register("triton", forward, dx)
