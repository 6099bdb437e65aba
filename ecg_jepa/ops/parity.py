"""What "correct" means for every backend of every op, in one place (tests and ``ecg-jepa bench`` both
use it).

A backend's result is compared with a float64 oracle, following FlashAttention's convention: its max-abs
error may be 2x the error of the same-precision plain reference (the op's ``reference`` backend run in
that dtype) plus one unit in the last place at the result's scale, at least 1 (the max-abs error of a 16-bit result is
a noisy statistic; without the ULP term a few percent of correct bf16 runs fail). float32 results get at
least ``FP32_RTOL`` of their scale: fp32 kernels sum in other orders and use the hardware's exp2, and an
error of 5e-6 relative hides no bug worth catching (a 0.5 % error, or a key counted twice, still fails; at
2e-6, PyTorch's own CPU attention backward failed now and then on fresh inputs: dk 3.6e-6 at d=128, L12 T50).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

FP32_RTOL = 5e-6


def tolerance(dtype: torch.dtype, base_err: float, scale: float) -> float:
    """The allowed max-abs error of a ``dtype`` result whose same-precision reference misses the oracle
    by ``base_err`` and whose oracle values reach ``scale`` in magnitude."""
    scale = max(scale, 1.0)  # a result that should be 0 (one key: no gradient) still has rounding noise
    bound = 2.0 * base_err + torch.finfo(dtype).eps * scale
    if dtype in (torch.float32, torch.float64):
        bound = max(bound, FP32_RTOL * scale)
    return bound


@dataclass(frozen=True)
class Check:
    """One compared tensor: max / mean absolute error of the backend and of the same-precision reference
    against the float64 oracle, and the bound."""

    name: str
    max_err: float
    mean_err: float
    base_max: float
    base_mean: float
    bound: float

    @property
    def ok(self) -> bool:
        return self.max_err <= self.bound  # False for NaN

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "FAIL"
        return (f"{self.name}: {verdict} max {self.max_err:.2e} mean {self.mean_err:.2e} "
                f"(same-precision reference: max {self.base_max:.2e} mean {self.base_mean:.2e}; bound {self.bound:.2e})")


def check(name: str, got: torch.Tensor, oracle: torch.Tensor, base: torch.Tensor | None = None) -> Check:
    """Compare ``got`` with the float64 ``oracle``; ``base`` is the same-precision reference's result
    (needed for 16-bit dtypes)."""
    diff = (got.detach().double().cpu() - oracle.detach().double().cpu()).abs()
    base_diff = diff if base is None else (base.detach().double().cpu() - oracle.detach().double().cpu()).abs()
    scale = oracle.detach().double().abs().max().item() if oracle.numel() else 0.0
    return Check(name, diff.max().item() if diff.numel() else 0.0, diff.mean().item() if diff.numel() else 0.0,
                 base_diff.max().item() if base_diff.numel() else 0.0,
                 base_diff.mean().item() if base_diff.numel() else 0.0,
                 tolerance(got.dtype, base_diff.max().item() if base_diff.numel() else 0.0, scale))


@dataclass(frozen=True)
class Parity:
    """Every compared tensor of one backend run."""

    backend: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def __str__(self) -> str:
        return f"{self.backend}:\n" + "\n".join(f"  {c}" for c in self.checks)

    def summary(self) -> str:
        """'ok', or the first failing tensor with its numbers (one line, for tables)."""
        bad = next((c for c in self.checks if not c.ok), None)
        return "ok" if bad is None else f"FAIL {bad.name} err {bad.max_err:.2e} > {bad.bound:.2e}"
