"""The token layout every op shares: lead-major tokens (index = lead·T + slot), the CroPA rule, and slot
masks (which time slots are hidden; the same slots in every lead).

The CroPA rule is written once, as :func:`cropa_allowed` (a FlexAttention ``mask_mod``-style predicate on
token indices); the dense boolean mask and the flex block mask are both derived from it. The fused
kernels (``kernels/``, ``csrc/``) do not evaluate it: they enumerate the keys it allows, the T keys of a
query's own lead and the L - 1 keys of its own slot.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..constants import N_SLOTS
from ..errors import InputError, InputTypeError


def cropa_allowed(q_idx: torch.Tensor, kv_idx: torch.Tensor, n_slots: int) -> torch.Tensor:
    """True where token ``q_idx`` may attend token ``kv_idx`` (lead-major indices, ``n_slots`` per lead):
    same lead or same slot."""
    return (q_idx // n_slots == kv_idx // n_slots) | (q_idx % n_slots == kv_idx % n_slots)


def cropa_mask(n_leads: int, n_slots: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(N, N) bool, N = n_leads·n_slots: :func:`cropa_allowed` for every (query, key) pair."""
    idx = torch.arange(n_leads * n_slots, device=device)
    return cropa_allowed(idx[:, None], idx[None, :], n_slots)


def check_slot_mask(mask: torch.Tensor, batch: int, n_slots: int = N_SLOTS) -> torch.Tensor:
    """Validate a slot mask ((n_slots,) or (batch, n_slots) bool, True = hidden) and return it as
    (1 or batch, n_slots). Every row must hide the same number of slots and keep at least one.

    The checks read the mask's values: on a GPU tensor that waits for the GPU, so validate the host copy
    (:meth:`SlotMask.of` does) and move the result.
    """
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise InputTypeError(f"mask must be a bool tensor (True = hidden slot), got {getattr(mask, 'dtype', type(mask).__name__)}")
    if mask.dim() == 1:
        mask = mask[None]
    if mask.dim() != 2 or mask.shape[-1] != n_slots or mask.shape[0] not in (1, batch):
        raise InputError(
            f"mask must have shape ({n_slots},) or ({batch}, {n_slots}) (one flag per time slot, True = hidden), "
            f"got {tuple(mask.shape)}"
        )
    hidden = mask.sum(-1)
    if (hidden != hidden[0]).any():
        raise InputError(
            "per-sample masks must hide the same number of slots in every row "
            f"(got counts {sorted(set(hidden.tolist()))}); draw them with a fixed count"
        )
    if int(hidden[0]) == n_slots:
        raise InputError("mask hides every time slot; keep at least one visible")
    return mask


def slot_indices(mask: torch.Tensor, hidden: bool) -> torch.Tensor:
    """(1 or B, T) bool mask -> (1 or B, k) long: each row's hidden (or visible) slots, ascending.
    Rows must select equally many slots (see :func:`check_slot_mask`)."""
    chosen = mask if hidden else ~mask
    count = int(chosen[0].sum())
    # A stable descending sort puts the chosen slots first, still in ascending order.
    return torch.sort(chosen.int(), dim=1, descending=True, stable=True).indices[:, :count]


def take_slots(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B or 1, L, T, C), idx (1 or B, k) -> (B, L, k, C): the given slots of every lead."""
    if idx.shape[0] == 1:
        return x[:, :, idx[0]]
    b = idx.shape[0]
    x = x.expand(b, -1, -1, -1)
    return x.gather(2, idx[:, None, :, None].expand(b, x.shape[1], -1, x.shape[-1]))


@dataclass(frozen=True)
class SlotMask:
    """A validated slot mask and the slot ids it selects, made once per batch and passed down, so that
    no layer reads mask values again (each read of a GPU tensor's values stalls the host).

    ``hidden``: (1 or B, T) bool, True = hidden; ``visible`` / ``hidden_ids``: (1 or B, k) long, ascending;
    ``order``: (1 or B, T) long, the visible slots then the hidden ones (the predictor's sequence order).
    All on one device.
    """

    hidden: torch.Tensor
    visible: torch.Tensor
    hidden_ids: torch.Tensor
    order: torch.Tensor

    @classmethod
    def of(cls, mask: "torch.Tensor | SlotMask", batch: int, device: torch.device | str | None = None,
           n_slots: int = N_SLOTS) -> "SlotMask":
        """Validate ``mask`` ((T,) or (batch, T) bool) on the host and return it with its slot ids on
        ``device`` (default: the mask's device). A :class:`SlotMask` is returned as it is (moved)."""
        if isinstance(mask, SlotMask):
            if mask.hidden.shape[0] not in (1, batch):
                raise InputError(f"the slot mask has {mask.hidden.shape[0]} rows for a batch of {batch}")
            return mask if device is None else mask.to(device)
        device = getattr(mask, "device", None) if device is None else device
        host = check_slot_mask(mask.cpu() if isinstance(mask, torch.Tensor) else mask, batch, n_slots)
        order = torch.sort(host.int(), dim=1, stable=True).indices  # visible (0) first, then hidden (1)
        n_vis = int((~host[0]).sum())
        made = cls(host, order[:, :n_vis], order[:, n_vis:], order)
        return made.to(device)

    def to(self, device: torch.device | str | None) -> "SlotMask":
        if device is None or self.hidden.device == torch.device(device):
            return self
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return SlotMask(move(self.hidden), move(self.visible), move(self.hidden_ids), move(self.order))

    @property
    def n_visible(self) -> int:
        return self.visible.shape[1]
