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


def slot_indices(mask: torch.Tensor, hidden: bool) -> torch.Tensor:
    """(1 or B, 50) bool mask -> (1 or B, k) long: each row's hidden (or visible) slots, ascending.
    Rows must select equally many slots (see :func:`check_slot_mask`)."""
    chosen = mask if hidden else ~mask
    count = int(chosen[0].sum())
    # A stable descending sort puts the chosen slots first, still in ascending order.
    return torch.sort(chosen.int(), dim=1, descending=True, stable=True).indices[:, :count]


def take_slots(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B or 1, L, 50, C), idx (1 or B, k) -> (B, L, k, C): the given slots of every lead."""
    if idx.shape[0] == 1:
        return x[:, :, idx[0]]
    b = idx.shape[0]
    x = x.expand(b, -1, -1, -1)
    return x.gather(2, idx[:, None, :, None].expand(b, x.shape[1], -1, x.shape[-1]))
