"""``cropa_attention``: one op, many backends, the same answer, and a dispatcher that explains itself."""
from __future__ import annotations

import importlib.util

import torch

from . import _torch_backends
from . import _cuda_backend
from .dispatch import Backend, Dispatcher, can_always, needs_grad, triton_why_not

_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)  # float64: pure-torch backends
_MAX_FUSED_HEAD_DIM = 128
_HAS_FLEX = importlib.util.find_spec("torch.nn.attention.flex_attention") is not None


def _flex_why_not(q: torch.Tensor, needs_grad: bool) -> str | None:
    if not _HAS_FLEX:
        return "this torch has no FlexAttention"
    if needs_grad and not q.is_cuda:
        return "FlexAttention has no backward on the CPU (forward-only there)"
    return None


def _triton_why_not(q: torch.Tensor, needs_grad: bool) -> str | None:
    reason = triton_why_not(q, needs_grad)
    if reason is None and q.shape[-1] > _MAX_FUSED_HEAD_DIM:
        reason = f"head dim {q.shape[-1]} > {_MAX_FUSED_HEAD_DIM}"
    return reason


def _triton_run(q, k, v, n_leads, scale):
    from ._triton_backend import triton_attention

    return triton_attention(q, k, v, n_leads, scale)


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("reference", _torch_backends.reference, can_always),
        Backend("sdpa", _torch_backends.sdpa, can_always),
        Backend("flex", _torch_backends.flex, _flex_why_not),
        Backend("structured", _torch_backends.structured, can_always),
        Backend("triton", _triton_run, _triton_why_not),
        _cuda_backend.ATTENTION,
    )
}

# ``auto`` takes the first backend that can run, in this order (fastest first, as measured in benchmarks/).
# The cuda extension joins the CUDA list once its GPU parity tests have passed on a GPU.
PRIORITY = {
    "cuda": ("triton", "flex", "sdpa", "structured", "reference"),
    "cpu": ("structured", "sdpa", "reference"),
}
DISPATCH = Dispatcher("CroPA attention", BACKENDS, PRIORITY)


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_leads: int) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{name} must be (B, H, N, d), got a {x.dim()}-D tensor of shape {tuple(x.shape)}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"q, k, v must have the same shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.dtype not in _DTYPES:
        raise TypeError(f"CroPA attention takes float32, float16, bfloat16 (or float64 on the torch backends), got {q.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if not isinstance(n_leads, int) or n_leads < 1:
        raise ValueError(f"n_leads must be a positive int, got {n_leads!r}")
    n = q.shape[-2]
    if n == 0 or n % n_leads:
        raise ValueError(
            f"N = {n} tokens is not a positive multiple of n_leads = {n_leads}: tokens must be lead-major, "
            "n_leads·T of them (index = lead·T + slot)"
        )


def explain_backend(
    q: torch.Tensor, k: torch.Tensor | None = None, v: torch.Tensor | None = None, n_leads: int = 8,
    backend: str = "auto",
) -> str:
    """Say which backend ``cropa_attention(q, k, v, n_leads, backend=backend)`` would use and why each
    other one was or was not taken. k and v default to q."""
    k = q if k is None else k
    v = q if v is None else v
    _check_inputs(q, k, v, n_leads)
    grad = needs_grad(q, k, v)
    chosen = _select(q, grad, backend, n_leads)
    text = DISPATCH.explain(q, grad, backend, chosen, f"shape {tuple(q.shape)}, n_leads={n_leads}")
    if backend == "auto" and n_leads == 1:
        text += "\n  (n_leads=1: CroPA is full attention, so auto runs sdpa without a mask)"
    elif backend == "auto" and chosen == "sdpa" and not q.is_cuda:
        text += f"\n  (T < {_CPU_STRUCTURED_MIN_SLOTS} slots per lead: sdpa beats structured on the CPU)"
    return text


# Below this many slots per lead the structured form's small batched matmuls lose to sdpa on the CPU
# (benchmarks/results/bench-cpu-*: T=10 structured 0.8x sdpa fwd+bwd, T=23 1.3x, T=50 1.7x).
_CPU_STRUCTURED_MIN_SLOTS = 16


def _select(q: torch.Tensor, grad: bool, backend: str, n_leads: int) -> str:
    if backend == "auto" and BACKENDS["sdpa"].why_not(q, grad) is None:
        if n_leads == 1:
            return "sdpa"  # one lead: CroPA is full attention, and sdpa runs it unmasked (flash kernels)
        if not q.is_cuda and q.shape[-2] // n_leads < _CPU_STRUCTURED_MIN_SLOTS:
            return "sdpa"
    return DISPATCH.select(q, grad, backend)


def cropa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    n_leads: int,
    *,
    backend: str = "auto",
    scale: float | None = None,
) -> torch.Tensor:
    """Cross-Pattern Attention.

    Args:
        q, k, v: (B, H, N, d), one dtype (float32, float16 or bfloat16; float64 on the pure-torch
            backends) and device. N = n_leads·T,
            tokens lead-major (index = lead·T + slot).
        n_leads: leads L ≥ 1; T = N / L slots per lead, any T ≥ 1.
        backend: "auto" (fastest that can run; see :func:`explain_backend`), "reference", "sdpa", "flex",
            "structured", "triton" or "cuda".
        scale: score scale, default d^-0.5.

    Returns:
        (B, H, N, d) in q's dtype: softmax attention where token (l, t) attends (l', t') iff l == l' or t == t'.
    """
    _check_inputs(q, k, v, n_leads)
    name = _select(q, needs_grad(q, k, v), backend, n_leads)
    return BACKENDS[name].run(q, k, v, n_leads, q.shape[-1] ** -0.5 if scale is None else float(scale))
