"""Fixed 2-D sin-cos position table of the original ECG-JEPA."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """(M,) positions -> (M, dim): ``[sin(p·ω_i), cos(p·ω_i)]`` with ``ω_i = 10000^(-i/(dim/2))``."""
    if dim % 2:
        raise InputError(f"sin-cos dimension must be even, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.outer(positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(dim: int, n_leads: int, n_slots: int) -> torch.Tensor:
    """The (n_leads·n_slots, dim) float32 table, row = lead·n_slots + slot.

    Dims [0, dim/2) encode the time slot, [dim/2, dim) the lead (the original's layout).
    """
    if dim % 4:
        raise InputError(f"2-D sin-cos table needs a width divisible by 4, got {dim}")
    slot, lead = np.meshgrid(np.arange(n_slots), np.arange(n_leads))
    table = np.concatenate([sincos_1d(dim // 2, slot), sincos_1d(dim // 2, lead)], axis=1)
    return torch.from_numpy(table).float()
