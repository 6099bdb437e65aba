"""Per-iteration schedules of the original recipe."""
from __future__ import annotations

import math


def cosine_lr(step: int, total: int, warmup: int, peak: float, start: float = 1e-6, floor: float = 1e-6) -> float:
    """Linear warm-up from ``start`` to ``peak`` over ``warmup`` steps, then cosine decay to ``floor``."""
    if step < warmup:
        return start + (peak - start) * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def ema_momentum(step: int, total: int, start: float = 0.996, end: float = 1.0) -> float:
    """Teacher EMA momentum, linear from ``start`` to ``end`` over the run."""
    return start + (end - start) * min(1.0, step / max(1, total))
