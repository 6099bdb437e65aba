"""One full pretraining step (teacher forward, student forward+backward, predictor, AdamW, EMA) with a
multi-block mask: ours (attention ``auto``) against the same model with the ``reference`` attention."""
from __future__ import annotations

import torch

from ecg_jepa.model.jepa import JEPA
from ecg_jepa.model.masks import multiblock_mask

from .report import Row
from .timing import time_call


def rows(preset: str, batch: int, device: torch.device, dtype: torch.dtype, budget: float) -> list[Row]:
    ecgs = torch.randn(batch, 8, 2500, device=device)
    mask = multiblock_mask(generator=torch.Generator().manual_seed(0))
    out = []
    for impl in ("auto", "reference"):
        torch.manual_seed(0)
        model = JEPA(preset, attn_backend=impl).to(device)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

        def train_step():
            with autocast:
                loss = model.loss(ecgs, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            model.update_teacher(0.996)

        row = Row("train step", f"{preset} B{batch} multiblock", str(dtype).removeprefix("torch."), impl, "ok")
        row.fwd_bwd = time_call(train_step, device, budget)
        row.extra["ecg_per_s"] = batch / (row.fwd_bwd.median / 1e3)
        out.append(row)
    return out
