"""How a benchmark row gets its parity verdict, in one place.

A row starts :data:`UNCHECKED`. It says ``ok`` only after :func:`judge` ran the shared parity check
(:mod:`ecg_jepa.ops.parity`'s rule: the row's result against a float64 run, within 2x the error of the
same-precision ``reference`` plus one unit in the last place) and the check held; it says
``FAIL <what> err <max> > <allowed>`` when the check failed or raised, and is then not timed. A row with
nothing to compare says ``n/a: <reason>`` (:func:`not_applicable`), a backend that cannot run here
``skipped: <reason>`` (:func:`skipped`).

Modules (an encoder block, a whole model) are compared through their twins: copies with the same weights
whose every CroPA attention runs the ``reference`` backend, in the measured precision and in float64
(:func:`attention_twin`, :func:`compare`).
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from ecg_jepa.model.attention import CroPAAttention
from ecg_jepa.ops.parity import Parity, check, tolerance

UNCHECKED = "unchecked"
"""A row's verdict until a check ran (a row that still says it was never judged: a benchmark bug)."""

OK = "ok"
"""What :meth:`Parity.summary` says when every compared tensor is within its bound."""

CHECK_BATCH = 2
"""Samples a module's parity is checked on (the float64 twin of a vit-b step is slow)."""


def passed(verdict: str) -> bool:
    """Whether a recorded verdict (a row's ``parity``, also read back from a result file) is a pass."""
    return verdict == OK


def not_applicable(reason: str) -> str:
    """The verdict of a row with nothing to compare (not CroPA, a throughput)."""
    return f"n/a: {reason}"


def skipped(reason: str) -> str:
    """The verdict of a backend that cannot run here."""
    return f"skipped: {reason}"


def judge(compare_fn: Callable[[], Parity]) -> tuple[str, bool]:
    """Run a parity check: (its one-line summary, whether it held). A check that raises (a backend that
    crashes or cannot build) is a failure with the exception's first line, not fatal to the run."""
    try:
        result = compare_fn()
    except Exception as e:  # reported in the row, not fatal
        first = (str(e).splitlines() or [""])[0][:120]
        return f"FAIL {type(e).__name__}: {first}", False
    return result.summary(), result.ok


def attention_twin(module: nn.Module, dtype: torch.dtype | None = None, backend: str = "reference") -> nn.Module:
    """A copy of ``module`` (same weights, cast to ``dtype`` if given) whose every CroPA attention runs
    ``backend``. Take it before ``module`` is compiled."""
    twin = copy.deepcopy(module)
    for m in twin.modules():
        if isinstance(m, CroPAAttention):
            m.backend = backend
    return twin if dtype is None else twin.to(dtype)


def compare(name: str, got: dict[str, torch.Tensor], base: dict[str, torch.Tensor],
            oracle: dict[str, torch.Tensor], precision: torch.dtype) -> Parity:
    """Compare each of ``got``'s tensors with the float64 ``oracle``'s, beside the same-precision reference
    twin's ``base``, under the op's tolerance for a computation in ``precision`` (the autocast dtype for a
    mixed-precision step, whose float32 results carry 16-bit rounding), taken relative to the tensor's
    largest value: a weight gradient far below 1 would otherwise pass anything under the op's floor of 1."""
    checks = []
    for key, tensor in got.items():
        want = oracle[key].detach().double()
        scale = want.abs().max().item() if want.numel() else 0.0
        c = check(key, tensor, want, base[key])
        bound = scale * tolerance(precision, c.base_max / scale, 1.0) if scale > 0 else tolerance(precision, c.base_max, 0.0)
        checks.append(dataclasses.replace(c, bound=bound))
    return Parity(name, tuple(checks))
