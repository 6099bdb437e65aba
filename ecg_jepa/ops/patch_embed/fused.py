"""The fused patch-embedding backends' ``torch.library`` ops, registered the same way for every kernel
family (Triton, CUDA): ``ecg_jepa::patch_embed_<kind>(x, weight, bias, pos, vis, lead_ids) -> tokens`` and
``ecg_jepa::patch_embed_<kind>_dx(grad, weight, vis, x_shape) -> dx``, with one fake implementation and
one autograd formula (dW, db: :func:`.reference.weight_grads`).

Shapes: x (B, L, S); weight (D, P); bias (D,); pos (rows, D); vis (1 or B, T_vis) int32 slot ids
ascending; lead_ids (L,) int32; tokens (B, L·T_vis, D) lead-major; dx like x, zero at hidden slots.
"""
from __future__ import annotations

from collections.abc import Callable

from ..registry import differentiable, fused_op
from .reference import weight_grads


def _fwd_fake(x, weight, bias, pos, vis, lead_ids):
    return x.new_empty((x.shape[0], x.shape[1] * vis.shape[1], weight.shape[0]))


def _dx_fake(grad, weight, vis, x_shape):
    return grad.new_empty(x_shape)


def register(kind: str, fwd_impl: Callable | None = None, dx_impl: Callable | None = None):
    """Register (or complete) the forward/dx pair of ``kind``; return (the forward op, the dx op)."""
    fwd = fused_op(f"patch_embed_{kind}", _fwd_fake, fwd_impl)
    dx_op = fused_op(f"patch_embed_{kind}_dx", _dx_fake, dx_impl)

    def setup_context(ctx, inputs, output):
        x, weight, bias, pos, vis, lead_ids = inputs
        ctx.save_for_backward(x, weight, vis)

    def backward(ctx, grad):
        x, weight, vis = ctx.saved_tensors
        dx = dx_op(grad, weight, vis, list(x.shape)) if ctx.needs_input_grad[0] else None
        dw, db = weight_grads(grad, x, weight, vis) if (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]) else (None, None)
        return dx, dw, db, None, None, None

    differentiable(f"patch_embed_{kind}", setup_context, backward)
    return fwd, dx_op
