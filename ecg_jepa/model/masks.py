"""The JEPA masking strategies: which time slots (the same in every lead) the student does not see.
Masks are (n_slots,) bool, True = hidden; validation and slot ids live in :mod:`ecg_jepa.ops.layout`."""
from __future__ import annotations

import torch

from ..constants import N_SLOTS


def random_mask(
    ratio: tuple[float, float] = (0.6, 0.7), n_slots: int = N_SLOTS, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(n_slots,) bool: int(n_slots·r) slots hidden at random, r ~ U(ratio)."""
    r = ratio[0] + (ratio[1] - ratio[0]) * torch.rand(1, generator=generator).item()
    mask = torch.zeros(n_slots, dtype=torch.bool)
    mask[torch.randperm(n_slots, generator=generator)[: int(n_slots * r)]] = True
    return mask


def multiblock_mask(
    scale: tuple[float, float] = (0.175, 0.225),
    n_blocks: int = 4,
    n_slots: int = N_SLOTS,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(n_slots,) bool: the union of ``n_blocks`` runs of int(n_slots·r) slots, r ~ U(scale),
    each starting uniformly in [0, n_slots - length)."""
    mask = torch.zeros(n_slots, dtype=torch.bool)
    for _ in range(n_blocks):
        r = scale[0] + (scale[1] - scale[0]) * torch.rand(1, generator=generator).item()
        length = int(n_slots * r)
        start = int(torch.randint(0, max(n_slots - length, 1), (1,), generator=generator))
        mask[start : start + length] = True
    return mask
