"""Checking a patch-embedding backend: the float64 oracle and one parity run (tokens and dx, dW, db),
shared by the tests and ``ecg-jepa bench`` (tolerance rule: :mod:`ecg_jepa.ops.parity`)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..parity import Parity, check


def oracle(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, pos: torch.Tensor,
           mask: torch.Tensor | None, leads: Sequence[int]) -> torch.Tensor:
    """float64, one token at a time: patch @ Wᵀ + b + pos[lead·T + slot], lead-major, slots ascending."""
    x, weight, bias = (t.cpu().double() for t in (x, weight, bias))  # differentiable: the gradients' oracle too
    pos = pos.detach().cpu().double()
    mask = None if mask is None else mask.cpu()
    b, n_leads, samples = x.shape
    dim, p = weight.shape
    t_all = samples // p
    out = []
    for i in range(b):
        row_mask = torch.zeros(t_all, dtype=torch.bool) if mask is None else (mask if mask.dim() == 1 else mask[i])
        slots = [s for s in range(t_all) if not row_mask[s]]
        out.append(torch.stack([
            x[i, lead, s * p:(s + 1) * p] @ weight.T + bias + pos[leads[lead] * t_all + s]
            for lead in range(n_leads) for s in slots
        ]))
    return torch.stack(out)


def _run(backend, x, w, b, pos, mask, leads, grad, device):
    from . import patch_embed

    x, w, b = (t.detach().to(device, copy=True).requires_grad_(grad is not None) for t in (x, w, b))
    out = patch_embed(x, w, b, pos.to(device), mask=None if mask is None else mask.to(device), leads=leads,
                      backend=backend)
    if grad is None:
        return out.detach(), ()
    out.backward(grad.to(out))
    return out.detach(), (x.grad, w.grad, b.grad)


def parity(backend: str | Callable, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, pos: torch.Tensor,
           mask: torch.Tensor | None = None, leads: Sequence[int] | None = None, grad: torch.Tensor | None = None,
           device: torch.device | str | None = None) -> Parity:
    """Run ``backend`` (on ``device``, default x's) and compare its tokens and, with ``grad``, its
    (dx, dW, db) with float64 autograd of the oracle, next to the same-precision reference's errors.
    ``backend`` is a backend's name, or a function ``(x, weight, bias, pos, mask, leads, grad) -> (tokens,
    (dx, dW, db) or ())``."""
    device = x.device if device is None else torch.device(device)
    leads = list(range(x.shape[1])) if leads is None else list(leads)
    x64, w64, b64 = (t.detach().cpu().double().requires_grad_(grad is not None) for t in (x, weight, bias))
    want = oracle(x64, w64, b64, pos, mask, leads)
    want_grads: tuple[torch.Tensor, ...] = ()
    if grad is not None:
        want.backward(grad.detach().cpu().double())
        want_grads = (x64.grad, w64.grad, b64.grad)
    if callable(backend):
        got, grads = backend(x, weight, bias, pos, mask, leads, grad)
        backend = getattr(backend, "__name__", "kernel")
    else:
        got, grads = _run(backend, x, weight, bias, pos, mask, leads, grad, device)
    base, base_grads = _run("reference", x, weight, bias, pos, mask, leads, grad, "cpu")
    checks = [check("tokens", got, want.detach(), base)]
    checks += [check(n, g, w, bb) for n, g, w, bb in zip(("dx", "dW", "db"), grads, want_grads, base_grads)]
    return Parity(backend, tuple(checks))
