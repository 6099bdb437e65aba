"""One full pretraining step as ``ecg-jepa pretrain`` runs it (teacher forward, student forward+backward,
predictor, AdamW (fused on CUDA), EMA; the trusted path: masks validated on the host before the step), with
multi-block masks drawn ahead and cycled: ours (attention ``auto``, eager and with the block stacks
compiled; the fused ``triton`` attention throughout) against the same model with the ``reference``
attention."""
from __future__ import annotations

import torch

from ecg_jepa.model.jepa import JEPA
from ecg_jepa.model.masks import multiblock_mask
from ecg_jepa.ops.layout import SlotMask
from ecg_jepa.train.pretrain import warm_up_kernels

from .report import Row
from .timing import time_call

VARIANTS = (("auto", False), ("auto", True), ("triton", False), ("reference", False))
"""(attention backend, compiled block stacks) of each timed row; on a GPU ``auto`` takes the fastest
measured backend for the teacher's forward and for the student and predictor (ops/cropa/measured.json);
the ``triton`` row runs the fused Triton kernels everywhere."""


def make_step(preset: str, batch: int, device: torch.device, dtype: torch.dtype, impl: str, compiled: bool,
              n_masks: int = 4):
    """A warmed-up training step of ``preset`` (attention ``impl``, block stacks compiled or not): a
    callable that runs one step with the next of ``n_masks`` cycled multi-block masks."""
    ecgs = torch.randn(batch, 8, 2500, device=device)
    gen = torch.Generator().manual_seed(0)
    masks = [SlotMask.of(multiblock_mask(generator=gen), batch, device) for _ in range(n_masks)]
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    torch.manual_seed(0)
    model = JEPA(preset, attn_backend=impl).to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=device.type == "cuda")
    warm_up_kernels(model, device, precision)
    if compiled:
        model.compile_blocks()
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    calls = [0]

    def train_step():
        mask = masks[calls[0] % n_masks]
        calls[0] += 1
        with autocast:
            loss = model(ecgs, mask, trusted=True)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.update_teacher(0.996)

    for _ in range(n_masks):  # every mask once before timing (compilation, autotuning)
        train_step()
    return train_step


def rows(preset: str, batch: int, device: torch.device, dtype: torch.dtype, budget: float,
         variants: tuple[tuple[str, bool], ...] = VARIANTS, n_masks: int = 4) -> list[Row]:
    out = []
    for impl, compiled in variants:
        train_step = make_step(preset, batch, device, dtype, impl, compiled, n_masks)
        name = f"{impl}, compiled" if compiled else impl
        row = Row("train step", f"{preset} B{batch} multiblock", str(dtype).removeprefix("torch."), name,
                  "n/a: not compared with the reference-attention step")
        row.fwd_bwd = time_call(train_step, device, budget)
        row.extra["ecg_per_s"] = batch / (row.fwd_bwd.median / 1e3)
        out.append(row)
    return out
