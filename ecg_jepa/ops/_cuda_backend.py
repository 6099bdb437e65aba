"""The ``cuda`` backend: the csrc/ extension's ops (``torch.ops.ecg_jepa.cropa_cuda_*``,
``patch_embed_cuda*``), loaded ahead-of-time (``ecg_jepa._C``) or built just in time on first use, with
fake implementations and autograd registered here so ``torch.compile`` traces through them.

Status: built and checked for register spills in CI, never yet run on a GPU (its GPU parity tests,
``pytest -m gpu``, have not run), so ``auto`` does not pick it.
"""
from __future__ import annotations

import importlib.util

import torch

from .. import build_ext
from .dispatch import Backend

NOTE = "built, never run on a GPU: auto skips it until its GPU parity tests pass"
_state = {"loaded": False}


def why_not(x: torch.Tensor, needs_grad: bool) -> str | None:
    if not x.is_cuda:
        return f"needs CUDA tensors, got {x.device}"
    if x.dtype == torch.float64:
        return "float64 is for the pure-torch backends"
    if x.shape[-1] > 128:
        return f"last dim {x.shape[-1]} > 128"
    if _state["loaded"] or importlib.util.find_spec("ecg_jepa._C") is not None:
        return None
    try:
        build_ext.check_prerequisites()
    except build_ext.BuildError as e:
        return f"cannot build the extension: {e}"
    return None  # builds on first use


def ensure_loaded() -> None:
    """Load the extension's ops (ahead-of-time module, else the JIT build, building it if needed) and
    register their fake implementations and autograd, once."""
    if _state["loaded"]:
        return
    if importlib.util.find_spec("ecg_jepa._C") is not None:
        import ecg_jepa._C  # noqa: F401  (registers the ops)
    else:
        build_ext.build()
    _register()
    _state["loaded"] = True


def _register() -> None:
    lib = "ecg_jepa::"

    @torch.library.register_fake(lib + "cropa_cuda_fwd")
    def _(q, k, v, n_leads, scale):
        return torch.empty_like(q, memory_format=torch.contiguous_format), q.new_empty(q.shape[:-1], dtype=torch.float32)

    @torch.library.register_fake(lib + "cropa_cuda_bwd")
    def _(grad_out, q, k, v, out, lse, n_leads, scale):
        return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v))

    @torch.library.register_fake(lib + "patch_embed_cuda")
    def _(x, weight, bias, pos, vis, lead_ids):
        return x.new_empty((x.shape[0], x.shape[1] * vis.shape[1], weight.shape[0]))

    @torch.library.register_fake(lib + "patch_embed_cuda_dx")
    def _(grad, weight, vis, x_shape):
        return grad.new_empty(x_shape)

    def attn_setup(ctx, inputs, output):
        q, k, v, n_leads, scale = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(q, k, v, *output)
        ctx.n_leads, ctx.scale = n_leads, scale

    def attn_backward(ctx, grad_out, _grad_lse):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = torch.ops.ecg_jepa.cropa_cuda_bwd(grad_out, q, k, v, out, lse, ctx.n_leads, ctx.scale)
        return dq, dk, dv, None, None

    torch.library.register_autograd(lib + "cropa_cuda_fwd", attn_backward, setup_context=attn_setup)

    from .patch_embed import weight_grads

    def embed_setup(ctx, inputs, output):
        x, weight, bias, pos, vis, lead_ids = inputs
        ctx.save_for_backward(x, weight, vis)

    def embed_backward(ctx, grad):
        x, weight, vis = ctx.saved_tensors
        dx = torch.ops.ecg_jepa.patch_embed_cuda_dx(grad, weight, vis, list(x.shape)) if ctx.needs_input_grad[0] else None
        dw, db = weight_grads(grad, x, weight, vis) if (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]) else (None, None)
        return dx, dw, db, None, None, None

    torch.library.register_autograd(lib + "patch_embed_cuda", embed_backward, setup_context=embed_setup)


def cuda_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_leads: int, scale: float) -> torch.Tensor:
    ensure_loaded()
    return torch.ops.ecg_jepa.cropa_cuda_fwd(q, k, v, n_leads, scale)[0]


def cuda_patch_embed(x, weight, bias, pos, vis, lead_ids) -> torch.Tensor:
    ensure_loaded()
    return torch.ops.ecg_jepa.patch_embed_cuda(x, weight, bias, pos, vis, lead_ids)


ATTENTION = Backend("cuda", cuda_attention, why_not, NOTE)
PATCH_EMBED = Backend("cuda", cuda_patch_embed, why_not, NOTE)
