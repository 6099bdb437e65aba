"""``cropa_attention``: one op, many backends, the same answer, and a dispatcher that explains itself."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable

import torch

from . import _torch_backends

_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)  # float64: pure-torch backends
_MAX_FUSED_HEAD_DIM = 128
_HAS_TRITON = importlib.util.find_spec("triton") is not None  # looks, does not import
_HAS_FLEX = importlib.util.find_spec("torch.nn.attention.flex_attention") is not None


@dataclass(frozen=True)
class Backend:
    """A CroPA implementation: ``run(q, k, v, n_leads, scale)`` and ``why_not(q, needs_grad)``, which
    returns None when it can run on these inputs, else the reason it cannot."""

    name: str
    run: Callable[..., torch.Tensor]
    why_not: Callable[[torch.Tensor, bool], str | None]


def _always(q: torch.Tensor, needs_grad: bool) -> str | None:
    return None


def _flex_why_not(q: torch.Tensor, needs_grad: bool) -> str | None:
    if not _HAS_FLEX:
        return "this torch has no FlexAttention"
    if needs_grad and not q.is_cuda:
        return "FlexAttention has no backward on the CPU (forward-only there)"
    return None


def _triton_why_not(q: torch.Tensor, needs_grad: bool) -> str | None:
    if not _HAS_TRITON:
        return "triton is not installed"
    from ._triton_backend import interpreter_active

    if not q.is_cuda and not interpreter_active():
        return f"needs CUDA tensors, got {q.device} (set TRITON_INTERPRET=1 to run the kernels on the CPU interpreter)"
    if q.dtype == torch.float64:
        return "float64 is for the pure-torch backends"
    if q.shape[-1] > _MAX_FUSED_HEAD_DIM:
        return f"head dim {q.shape[-1]} > {_MAX_FUSED_HEAD_DIM}"
    if q.is_cuda and q.dtype == torch.bfloat16 and torch.cuda.get_device_capability(q.device) < (8, 0):
        return "bf16 needs compute capability ≥ 8.0"
    return None


def _triton_run(q, k, v, n_leads, scale):
    from ._triton_backend import triton_attention

    return triton_attention(q, k, v, n_leads, scale)


def _cuda_why_not(q: torch.Tensor, needs_grad: bool) -> str | None:
    return "the CUDA C++ extension (ecg_jepa._C) is not part of this build yet"


def _cuda_run(q, k, v, n_leads, scale):
    raise NotImplementedError(_cuda_why_not(q, False))


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("reference", _torch_backends.reference, _always),
        Backend("sdpa", _torch_backends.sdpa, _always),
        Backend("flex", _torch_backends.flex, _flex_why_not),
        Backend("structured", _torch_backends.structured, _always),
        Backend("triton", _triton_run, _triton_why_not),
        Backend("cuda", _cuda_run, _cuda_why_not),
    )
}

# ``auto`` takes the first backend that can run, in this order (fastest first, as measured in benchmarks/).
PRIORITY = {
    "cuda": ("cuda", "triton", "flex", "sdpa", "structured", "reference"),
    "cpu": ("structured", "sdpa", "reference"),
}


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


def _device_kind(q: torch.Tensor) -> str:
    return "cuda" if q.is_cuda else "cpu"


def _needs_grad(*xs: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(x.requires_grad for x in xs)


def explain_backend(
    q: torch.Tensor, k: torch.Tensor | None = None, v: torch.Tensor | None = None, n_leads: int = 8,
    backend: str = "auto",
) -> str:
    """Say which backend ``cropa_attention(q, k, v, n_leads, backend=backend)`` would use and why each
    other one was or was not taken. k and v default to q."""
    k = q if k is None else k
    v = q if v is None else v
    _check_inputs(q, k, v, n_leads)
    needs_grad = _needs_grad(q, k, v)
    chosen = _select(q, needs_grad, backend, n_leads)
    order = PRIORITY[_device_kind(q)]
    lines = [
        f"CroPA attention on {q.device}, {q.dtype}, shape {tuple(q.shape)}, n_leads={n_leads}, "
        f"grad={'yes' if needs_grad else 'no'}: backend={backend!r} -> {chosen!r}"
    ]
    if backend == "auto" and n_leads == 1:
        lines.append("  (n_leads=1: CroPA is full attention, so auto runs sdpa without a mask)")
    for name in (*order, *(b for b in BACKENDS if b not in order)):
        reason = BACKENDS[name].why_not(q, needs_grad)
        if name == chosen:
            status = "chosen"
        elif reason is not None:
            status = f"cannot run: {reason}"
        elif name not in order:
            status = f"can run, but auto never picks it on {_device_kind(q)}"
        else:
            status = "can run; lower priority" if backend == "auto" else "can run; not requested"
        lines.append(f"  {name:<10} {status}")
    return "\n".join(lines)


def _select(q: torch.Tensor, needs_grad: bool, backend: str, n_leads: int) -> str:
    if backend == "auto":
        if n_leads == 1 and BACKENDS["sdpa"].why_not(q, needs_grad) is None:
            return "sdpa"  # one lead: CroPA is full attention, and sdpa runs it unmasked (flash kernels)
        for name in PRIORITY[_device_kind(q)]:
            if BACKENDS[name].why_not(q, needs_grad) is None:
                return name
        raise RuntimeError("no CroPA backend can run on these inputs")  # reference always can
    if backend not in BACKENDS:
        raise ValueError(f"unknown CroPA backend {backend!r}; choose one of 'auto', {', '.join(map(repr, BACKENDS))}")
    reason = BACKENDS[backend].why_not(q, needs_grad)
    if reason is not None:
        raise ValueError(f"CroPA backend {backend!r} cannot run here: {reason}")
    return backend


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
    name = _select(q, _needs_grad(q, k, v), backend, n_leads)
    return BACKENDS[name].run(q, k, v, n_leads, q.shape[-1] ** -0.5 if scale is None else float(scale))
