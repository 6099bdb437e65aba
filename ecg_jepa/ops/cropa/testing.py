"""Checking a CroPA backend: the float64 oracle and one parity run (forward and gradients), shared by the
tests and ``ecg-jepa bench`` (the tolerance rule is :mod:`ecg_jepa.ops.parity`'s)."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..parity import Parity, check


def oracle(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_leads: int, scale: float | None = None) -> torch.Tensor:
    """float64 attention from first principles: explicit (lead, slot) of every token, masked softmax.
    Written independently of :mod:`..layout` so that it checks the rule too."""
    q, k, v = q.double(), k.double(), v.double()
    n = q.shape[-2]
    t = n // n_leads
    ids = torch.arange(n, device=q.device)
    allowed = (ids[:, None] // t == ids[None, :] // t) | (ids[:, None] % t == ids[None, :] % t)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = (q @ k.transpose(-1, -2) * scale).masked_fill(~allowed, float("-inf"))
    return s.softmax(-1) @ v


def _run(backend: str, q, k, v, n_leads: int, grad_out, device) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    from . import cropa_attention

    q, k, v = (x.detach().to(device, copy=True).requires_grad_(grad_out is not None) for x in (q, k, v))
    out = cropa_attention(q, k, v, n_leads, backend=backend)
    if grad_out is None:
        return out.detach(), ()
    out.backward(grad_out.to(out))
    return out.detach(), (q.grad, k.grad, v.grad)


def parity(backend: str | Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_leads: int,
           grad_out: torch.Tensor | None = None, device: torch.device | str | None = None) -> Parity:
    """Run ``backend`` on (q, k, v) (moved to ``device``, default theirs) and compare its output and, with
    ``grad_out``, its (dq, dk, dv) with the float64 oracle (computed by autograd on the CPU), next to the
    same-precision ``reference`` backend's own errors. ``backend`` is a backend's name, or a function
    ``(q, k, v, n_leads, grad_out) -> (out, (dq, dk, dv) or ())`` (a kernel tested outside the dispatcher)."""
    device = q.device if device is None else torch.device(device)
    q64, k64, v64 = (x.detach().cpu().double().requires_grad_(grad_out is not None) for x in (q, k, v))
    want = oracle(q64, k64, v64, n_leads)
    want_grads: tuple[torch.Tensor, ...] = ()
    if grad_out is not None:
        want.backward(grad_out.detach().cpu().double())
        want_grads = (q64.grad, k64.grad, v64.grad)
    if callable(backend):
        got, grads = backend(q, k, v, n_leads, grad_out)
        backend = getattr(backend, "__name__", "kernel")
    else:
        got, grads = _run(backend, q, k, v, n_leads, grad_out, device)
    base, base_grads = _run("reference", q, k, v, n_leads, grad_out, "cpu")
    checks = [check("out", got, want.detach(), base)]
    checks += [check(name, g, w, b) for name, g, w, b in zip(("dq", "dk", "dv"), grads, want_grads, base_grads)]
    if got.dtype != q.dtype or got.shape != q.shape:
        raise AssertionError(f"{backend} returned {got.dtype} {tuple(got.shape)} for {q.dtype} {tuple(q.shape)} inputs")
    return Parity(backend, tuple(checks))
