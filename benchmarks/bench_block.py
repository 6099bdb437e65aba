"""One encoder block (LayerNorm, CroPA attention, MLP) on all 400 tokens: ours (attention ``auto``)
against the same block with the ``reference`` attention; forward and forward+backward."""
from __future__ import annotations

import torch

from ecg_jepa.model.jepa import PRESETS
from ecg_jepa.model.vit import Block

from .report import Row
from .timing import time_call


def rows(preset: str, batch: int, device: torch.device, dtype: torch.dtype, budget: float) -> list[Row]:
    cfg = PRESETS[preset].encoder
    x = torch.randn(batch, 400, cfg.dim, device=device, dtype=dtype)
    out = []
    for impl in ("auto", "reference"):
        torch.manual_seed(0)
        block = Block(cfg.dim, cfg.num_heads, attn_backend=impl).to(device, dtype)
        row = Row("encoder block", f"B{batch} N400 D{cfg.dim} H{cfg.num_heads}", str(dtype).removeprefix("torch."),
                  impl, "n/a: not compared with the reference block")
        with torch.no_grad():
            row.fwd = time_call(lambda: block(x, 8), device, budget)
        row.fwd_bwd = time_call(lambda: block(x, 8).sum().backward(), device, budget)
        out.append(row)
    return out
