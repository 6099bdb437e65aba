"""Slot masks (True = hidden) and the CroPA token mask."""
from __future__ import annotations

import torch

from ..constants import N_SLOTS


def cropa_mask(n_leads: int, n_slots: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(N, N) bool, N = n_leads·n_slots, lead-major: True where token (l,t) may attend (l',t'),
    i.e. where l == l' or t == t'."""
    lead = torch.arange(n_leads, device=device).repeat_interleave(n_slots)
    slot = torch.arange(n_slots, device=device).repeat(n_leads)
    return (lead[:, None] == lead[None, :]) | (slot[:, None] == slot[None, :])


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


def check_slot_mask(mask: torch.Tensor, batch: int, n_slots: int = N_SLOTS) -> torch.Tensor:
    """Validate a slot mask ((n_slots,) or (batch, n_slots) bool, True = hidden) and return it as
    (1 or batch, n_slots). Every row must hide the same number of slots and keep at least one."""
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = hidden slot), got {mask.dtype}")
    if mask.dim() == 1:
        mask = mask[None]
    if mask.dim() != 2 or mask.shape[-1] != n_slots or mask.shape[0] not in (1, batch):
        raise ValueError(
            f"mask must have shape ({n_slots},) or ({batch}, {n_slots}) (one flag per time slot, True = hidden), "
            f"got {tuple(mask.shape)}"
        )
    hidden = mask.sum(-1)
    if (hidden != hidden[0]).any():
        raise ValueError(
            "per-sample masks must hide the same number of slots in every row "
            f"(got counts {sorted(set(hidden.tolist()))}); draw them with a fixed count"
        )
    if int(hidden[0]) == n_slots:
        raise ValueError("mask hides every time slot; keep at least one visible")
    return mask
