"""The fused CroPA backends' ``torch.library`` ops, registered the same way for every kernel family
(Triton, CUDA): ``ecg_jepa::cropa_<kind>_fwd(q, k, v, n_leads, scale) -> (out, lse)`` and
``ecg_jepa::cropa_<kind>_bwd(grad_out, q, k, v, out, lse, n_leads, scale) -> (dq, dk, dv)``, with one
fake implementation and one autograd formula.

Shapes: q, k, v, out, grads (B, H, N, d), N = n_leads·T lead-major; lse (B, H, N) float32, the natural-log
log-sum-exp of each query's scores over all the keys CroPA lets it see (the backward's P = exp(S - lse)).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..registry import differentiable, fused_op


LOG2E = 1.4426950408889634
"""log2(e): the kernels work in base 2, so launchers pass ``scale · LOG2E`` as their score scale."""


def strides3(x: torch.Tensor) -> tuple[int, int, int]:
    """The first three strides, as the kernels take them: (batch, head, token) of a (B, H, N, d) tensor;
    (batch, lead, head) of split's (B, L, H, T_pad) LSE."""
    return x.stride(0), x.stride(1), x.stride(2)


def unit_last(x: torch.Tensor) -> torch.Tensor:
    """x itself if its last dim is contiguous (what the kernels' row loads need), else a contiguous copy."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _fwd_fake(q, k, v, n_leads, scale):
    return torch.empty_like(q, memory_format=torch.contiguous_format), q.new_empty(q.shape[:-1], dtype=torch.float32)


def _bwd_fake(grad_out, q, k, v, out, lse, n_leads, scale):
    return tuple(torch.empty_like(x, memory_format=torch.contiguous_format) for x in (q, k, v))


def register(kind: str, fwd_impl: Callable | None = None, bwd_impl: Callable | None = None,
             fwd_fake: Callable = _fwd_fake, bwd_fake: Callable = _bwd_fake):
    """Register (or, for ops the CUDA extension defines, complete) the fwd/bwd pair of ``kind``; return
    (the attention function ``(q, k, v, n_leads, scale) -> out``, the fwd op, the bwd op). The fakes
    default to the layouts above; a kind whose kernels return others passes its own."""
    fwd = fused_op(f"cropa_{kind}_fwd", fwd_fake, fwd_impl)
    bwd = fused_op(f"cropa_{kind}_bwd", bwd_fake, bwd_impl)

    def setup_context(ctx, inputs, output):
        q, k, v, n_leads, scale = inputs
        out, lse = output
        ctx.mark_non_differentiable(lse)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.n_leads, ctx.scale = n_leads, scale

    def backward(ctx, grad_out, _grad_lse):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = bwd(grad_out, q, k, v, out, lse, ctx.n_leads, ctx.scale)
        return dq, dk, dv, None, None

    differentiable(f"cropa_{kind}_fwd", setup_context, backward)

    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_leads: int, scale: float) -> torch.Tensor:
        return fwd(q, k, v, n_leads, scale)[0]

    return attention, fwd, bwd
