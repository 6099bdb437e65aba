"""Backend dispatch shared by the ops: each backend says why it cannot run, ``auto`` takes the first
that can in a fixed per-device priority, and the choice explains itself."""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Callable

import torch

HAS_TRITON = importlib.util.find_spec("triton") is not None  # looks, does not import


@dataclass(frozen=True)
class Backend:
    """One implementation of an op: ``run(...)`` and ``why_not(x, needs_grad)``, which returns None when
    it can run on inputs like ``x``, else the reason it cannot."""

    name: str
    run: Callable[..., torch.Tensor]
    why_not: Callable[[torch.Tensor, bool], str | None]
    note: str = ""


def can_always(x: torch.Tensor, needs_grad: bool) -> str | None:
    return None


def interpreter_active() -> bool:
    """True when Triton kernels run on the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def device_guard(x: torch.Tensor):
    """Context that makes x's GPU current for a kernel launch (a no-op context for CPU tensors)."""
    return torch.cuda.device(x.device) if x.is_cuda else torch.device("cpu")


def triton_why_not(x: torch.Tensor, needs_grad: bool) -> str | None:
    """The conditions every Triton kernel of this package shares."""
    if not HAS_TRITON:
        return "triton is not installed"
    if not x.is_cuda and not interpreter_active():
        return f"needs CUDA tensors, got {x.device} (set TRITON_INTERPRET=1 to run the kernels on the CPU interpreter)"
    if x.dtype == torch.float64:
        return "float64 is for the pure-torch backends"
    if x.is_cuda and x.dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device) < (8, 0):
        return "bf16 needs compute capability ≥ 8.0"
    return None


def device_kind(x: torch.Tensor) -> str:
    return "cuda" if x.is_cuda else "cpu"


def needs_grad(*xs: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(x.requires_grad for x in xs)


@dataclass(frozen=True)
class Dispatcher:
    """Backends of one op and the order ``auto`` tries them in, per device kind."""

    op: str
    backends: dict[str, Backend]
    priority: dict[str, tuple[str, ...]]

    def select(self, x: torch.Tensor, grad: bool, backend: str) -> str:
        if backend == "auto":
            for name in self.priority[device_kind(x)]:
                if self.backends[name].why_not(x, grad) is None:
                    return name
            raise RuntimeError(f"no {self.op} backend can run on these inputs")
        if backend not in self.backends:
            raise ValueError(
                f"unknown {self.op} backend {backend!r}; choose one of 'auto', {', '.join(map(repr, self.backends))}"
            )
        reason = self.backends[backend].why_not(x, grad)
        if reason is not None:
            raise ValueError(f"{self.op} backend {backend!r} cannot run here: {reason}")
        return backend

    def explain(self, x: torch.Tensor, grad: bool, backend: str, chosen: str, what: str) -> str:
        """A header naming the inputs and the choice, then one line per backend with its status."""
        kind = device_kind(x)
        order = self.priority[kind]
        lines = [f"{self.op} on {x.device}, {x.dtype}, {what}, grad={'yes' if grad else 'no'}: "
                 f"backend={backend!r} -> {chosen!r}"]
        for name in (*order, *(b for b in self.backends if b not in order)):
            reason = self.backends[name].why_not(x, grad)
            if name == chosen:
                status = "chosen"
            elif reason is not None:
                status = f"cannot run: {reason}"
            elif name not in order:
                status = f"can run, but auto never picks it on {kind}"
            else:
                status = "can run; lower priority" if backend == "auto" else "can run; not requested"
            note = self.backends[name].note
            lines.append(f"  {name:<10} {status}" + (f" [{note}]" if note else ""))
        return "\n".join(lines)
