"""The ``reference`` CroPA backend: the eager twin every other backend is checked against (its float64
run is the oracle's equal; its same-precision run sets the 16-bit tolerance, see :mod:`..parity`)."""
from __future__ import annotations

import torch

from ..layout import cropa_mask


def softmax_wide(scores: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Softmax over the last dim, computed in at least fp32, returned in ``dtype``."""
    wide = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    return torch.softmax(scores.to(wide), dim=-1).to(dtype)


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_leads: int, scale: float) -> torch.Tensor:
    """Materialized (N, N) scores, the boolean CroPA mask, softmax (fp32 for 16-bit inputs), then P @ V.
    q, k, v: (B, H, N, d), N = n_leads·T lead-major -> (B, H, N, d)."""
    n_slots = q.shape[-2] // n_leads
    scores = (q @ k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~cropa_mask(n_leads, n_slots, q.device), float("-inf"))
    return softmax_wide(scores, q.dtype) @ v
