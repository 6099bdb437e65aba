"""What every op shares: backends with capabilities declared as data, a dispatcher that explains itself,
and one helper that registers a fused kernel as a ``torch.library`` op (fake implementation, autograd).

The dispatcher decides on an :class:`InputSpec`, a description of the inputs (device type, dtype, shape,
whether gradients are needed, the GPU's compute capability), never on the tensors themselves: so the
decision for a GPU can be tested on a machine without one, and nothing here touches a GPU driver.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from .setting import current_backend

HAS_TRITON = importlib.util.find_spec("triton") is not None  # looks, does not import

LIBRARY = "ecg_jepa"


def interpreter_active() -> bool:
    """True when Triton kernels run on the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def device_guard(x: torch.Tensor):
    """Context that makes x's GPU current for a kernel launch (a no-op context for CPU tensors)."""
    return torch.cuda.device(x.device) if x.is_cuda else torch.device("cpu")


def needs_grad(*xs: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(x.requires_grad for x in xs)


_WHERE = {"cpu": "the CPU", "cuda": "a GPU"}


def dtype_name(dtype: torch.dtype) -> str:
    """'bfloat16' for torch.bfloat16."""
    return str(dtype).removeprefix("torch.")


@functools.lru_cache(maxsize=None)
def _gpu(index: int) -> tuple[tuple[int, int], str]:
    """(compute capability, name) of GPU ``index``, asked once per process (every dispatch needs them)."""
    return tuple(torch.cuda.get_device_capability(index)), torch.cuda.get_device_name(index)


@dataclass(frozen=True)
class InputSpec:
    """The inputs of one call, described: ``device`` "cpu" or "cuda"; ``shape`` of the op's main tensor;
    ``capability`` the GPU's (major, minor), None on the CPU; ``n_leads`` for attention."""

    device: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    needs_grad: bool = False
    capability: tuple[int, int] | None = None
    n_leads: int | None = None
    device_name: str | None = None  # the GPU's name ("NVIDIA H200"), when there is one

    @classmethod
    def of(cls, x: torch.Tensor, needs_grad: bool = False, n_leads: int | None = None) -> "InputSpec":
        cap, name = _gpu(x.device.index if x.device.index is not None else torch.cuda.current_device()) \
            if x.is_cuda else (None, None)
        return cls(x.device.type, x.dtype, tuple(x.shape), needs_grad, cap, n_leads, name)

    @classmethod
    def describe(cls, device: str | torch.device, dtype: torch.dtype, shape: Sequence[int], needs_grad: bool = False,
                 n_leads: int | None = None, capability: tuple[int, int] | None = None) -> "InputSpec":
        """Inputs of this shape described without allocating them. On a ``cuda`` device of this machine the
        GPU's own capability and name are used; without a GPU, ``capability`` describes the one meant (on
        the CPU it is dropped)."""
        device = torch.device(device)
        name = None
        if device.type != "cuda":
            capability = None
        elif torch.cuda.is_available():
            capability, name = _gpu(device.index if device.index is not None else torch.cuda.current_device())
        return cls(device.type, dtype, tuple(shape), needs_grad, capability, n_leads, name)

    def __str__(self) -> str:
        where = self.device + (f" sm_{self.capability[0]}{self.capability[1]}" if self.capability else "")
        leads = f", n_leads={self.n_leads}" if self.n_leads is not None else ""
        return f"{where}, {dtype_name(self.dtype)}, shape {self.shape}{leads}, grad={'yes' if self.needs_grad else 'no'}"


@dataclass(frozen=True)
class Capabilities:
    """What a backend can run, as data.

    devices: device types it runs on. ``interpreted_on_cpu``: it also runs on CPU tensors, but only under
    the Triton interpreter. backward_devices: where it has a backward (None: wherever it runs).
    max_last_dim: the largest size of the main tensor's last dim (attention: the head dim).
    min_capability: per dtype, the oldest GPU (major, minor) that has it.
    fits: a shape-dependent limit, as a function of the spec returning None or the reason.
    """

    devices: tuple[str, ...] = ("cpu", "cuda")
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
    interpreted_on_cpu: bool = False
    backward_devices: tuple[str, ...] | None = None
    max_last_dim: int | None = None
    min_capability: tuple[tuple[torch.dtype, tuple[int, int]], ...] = ()
    fits: Callable[[InputSpec], str | None] | None = None  # a limit of the inputs' size (e.g. shared memory)

    def reasons(self, spec: InputSpec) -> list[str]:
        """Every reason this backend cannot run ``spec`` (empty: it can)."""
        out = []
        if spec.device not in self.devices:
            if spec.device == "cpu" and self.interpreted_on_cpu:
                if not interpreter_active():
                    out.append("needs CUDA tensors, got cpu (set TRITON_INTERPRET=1 to run the kernels on the CPU interpreter)")
            else:
                out.append(f"runs on {' or '.join(self.devices)} tensors, got {spec.device}")
        if spec.dtype not in self.dtypes:
            allowed = ", ".join(dtype_name(d) for d in self.dtypes)
            extra = " (float64 is for the pure-torch backends)" if spec.dtype == torch.float64 else ""
            out.append(f"takes {allowed}, got {dtype_name(spec.dtype)}{extra}")
        if spec.needs_grad and self.backward_devices is not None and spec.device not in self.backward_devices:
            out.append(f"has no backward on {_WHERE.get(spec.device, spec.device)} (forward only there)")
        if self.max_last_dim is not None and spec.shape and spec.shape[-1] > self.max_last_dim:
            out.append(f"last dim {spec.shape[-1]} > {self.max_last_dim}")
        for dtype, cap in self.min_capability:
            if spec.dtype == dtype and spec.capability is not None and spec.capability < cap:
                out.append(f"{dtype_name(dtype)} needs compute capability ≥ {cap[0]}.{cap[1]}, this GPU has "
                           f"{spec.capability[0]}.{spec.capability[1]}")
        if self.fits is not None and not out:
            reason = self.fits(spec)
            if reason:
                out.append(reason)
        return out


@dataclass(frozen=True)
class Backend:
    """One implementation of an op: ``run(...)``, its :class:`Capabilities`, and ``available()``, a probe
    of this environment (a package, a toolkit) that returns None or what is missing."""

    name: str
    run: Callable[..., torch.Tensor]
    caps: Capabilities = field(default_factory=Capabilities)
    available: Callable[[], str | None] = lambda: None
    note: str = ""

    def why_not(self, spec: InputSpec) -> list[str]:
        """Every reason it cannot run ``spec`` here (empty: it can)."""
        missing = self.available()
        return ([missing] if missing else []) + self.caps.reasons(spec)


def triton_available() -> str | None:
    return None if HAS_TRITON else "triton is not installed (pip install triton; Linux only)"


# The order ``auto`` tries backends in for an input, and a line saying why that order.
Order = Callable[[InputSpec], tuple[Sequence[str], str]]


@dataclass(frozen=True)
class Dispatcher:
    """The backends of one op, the order ``auto`` tries them in (a function of the input spec) and the
    name of the op's runtime setting (:mod:`.setting`), which a request of ``backend=None`` follows."""

    op: str
    backends: dict[str, Backend]
    order: Order
    setting: str

    def _choice(self, spec: InputSpec, backend: str) -> str | None:
        """The backend that runs ``spec`` for this request, None if none can (raises on an unknown name)."""
        if backend == "auto":
            names, _ = self.order(spec)
            return next((name for name in names if not self.backends[name].why_not(spec)), None)
        if backend not in self.backends:
            raise InputError(
                f"unknown {self.op} backend {backend!r}; choose one of 'auto', {', '.join(map(repr, self.backends))}"
            )
        return None if self.backends[backend].why_not(spec) else backend

    def select(self, spec: InputSpec, backend: str | None = None) -> str:
        """The backend that runs ``spec``: ``backend``, or the op's setting when it is None."""
        backend = current_backend(self.setting, backend)
        chosen = self._choice(spec, backend)
        if chosen is not None:
            return chosen
        if backend == "auto":
            raise InputError(f"no {self.op} backend can run on {spec}:\n" + self.explain(spec))
        reasons = self.backends[backend].why_not(spec)
        raise InputError(f"{self.op} backend {backend!r} cannot run here: {'; '.join(reasons)}")

    def explain(self, spec: InputSpec, backend: str | None = None) -> str:
        """A header naming the inputs and the choice, then one line per backend with every reason."""
        backend = current_backend(self.setting, backend)
        chosen = self._choice(spec, backend)
        names, why = self.order(spec)
        lines = [f"{self.op} on {spec}: backend={backend!r} -> {chosen!r}"]
        if backend == "auto" and why:
            lines.append(f"  (auto's order here: {', '.join(names)}; {why})")
        for name in (*names, *(b for b in self.backends if b not in names)):
            reasons = self.backends[name].why_not(spec)
            if name == chosen:
                status = "chosen"
            elif reasons:
                status = "cannot run: " + "; ".join(reasons)
            elif name not in names:
                status = f"can run, but auto does not pick it for {spec.device} inputs"
            else:
                status = "can run; lower priority" if backend == "auto" else "can run; not requested"
            note = self.backends[name].note
            lines.append(f"  {name:<10} {status}" + (f" [{note}]" if note else ""))
        return "\n".join(lines)


def fused_op(name: str, fake: Callable, impl: Callable | None = None,
             device_types: tuple[str, ...] = ("cuda", "cpu")):
    """Register ``ecg_jepa::<name>``: with ``impl`` (a Python launcher with type hints) as a new custom op;
    without it, an op already defined by the CUDA extension. Either way ``fake`` becomes its fake (meta)
    implementation, so ``torch.compile`` can trace it. Returns the callable op."""
    qualname = f"{LIBRARY}::{name}"
    if impl is not None:
        torch.library.custom_op(qualname, impl, mutates_args=(), device_types=device_types)
    torch.library.register_fake(qualname, fake)
    return getattr(getattr(torch.ops, LIBRARY), name)


def differentiable(name: str, setup_context: Callable, backward: Callable) -> None:
    """Give ``ecg_jepa::<name>`` its autograd formula (``setup_context`` saves, ``backward`` returns one
    gradient per input, None for non-tensors)."""
    torch.library.register_autograd(f"{LIBRARY}::{name}", backward, setup_context=setup_context)
