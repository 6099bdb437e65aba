"""One full pretraining step as ``ecg-jepa pretrain`` runs it (teacher forward, student forward+backward,
predictor, AdamW (fused on CUDA), EMA; the trusted path: masks validated on the host before the step), with
multi-block masks drawn ahead and cycled: ours (attention ``auto``, eager and with the block stacks
compiled; the fused ``triton`` attention throughout) against the same model with the ``reference``
attention. Each model is first compared with its reference-attention twins (same weights, ECGs and mask:
the step's loss and the gradients of the student's first block) and timed only if it agrees."""
from __future__ import annotations

import torch

from ecg_jepa.constants import N_SAMPLES
from ecg_jepa.model.jepa import JEPA
from ecg_jepa.model.masks import multiblock_mask
from ecg_jepa.ops.layout import SlotMask
from ecg_jepa.ops.parity import Parity
from ecg_jepa.train.pretrain import warm_up_kernels

from .report import Row
from .timing import time_call
from .verdict import CHECK_BATCH, attention_twin, compare, judge

VARIANTS = (("auto", False), ("auto", True), ("triton", False), ("reference", False))
"""(attention backend, compiled block stacks) of each timed row; on a GPU ``auto`` takes the fastest
measured backend for the teacher's forward and for the student and predictor (ops/cropa/measured.json);
the ``triton`` row runs the fused Triton kernels everywhere."""


def build(preset: str, device: torch.device, impl: str) -> JEPA:
    """``preset``'s model with attention ``impl`` (each CroPA module's own backend), its weights drawn from seed 0."""
    torch.manual_seed(0)
    return attention_twin(JEPA(preset), backend=impl).to(device)


def _autocast(device: torch.device, dtype: torch.dtype) -> torch.autocast:
    return torch.autocast(device.type, dtype=dtype, enabled=dtype in (torch.bfloat16, torch.float16))


def _loss_and_grads(model: JEPA, ecgs: torch.Tensor, mask: SlotMask, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One step's loss (autocast to ``dtype`` when it is 16-bit) and the gradients of the student's first
    block; no optimizer step, the gradients are cleared after."""
    with _autocast(ecgs.device, dtype):
        loss = model(ecgs, mask, trusted=True)[0]
    loss.backward()
    block = model.encoder.encoder_blocks.blocks[0]
    result = {"loss": loss.detach(), **{f"dblock0.{name}": p.grad.clone() for name, p in block.named_parameters()}}
    model.zero_grad(set_to_none=True)
    return result


def step_parity(model: JEPA, same: JEPA, wide: JEPA, dtype: torch.dtype) -> Parity:
    """``model``'s step against ``same`` (its reference-attention twin, run like it) and ``wide`` (that
    twin in float64) on :data:`~.verdict.CHECK_BATCH` ECGs under one multi-block mask."""
    device = model.encoder.W_P.weight.device
    gen = torch.Generator().manual_seed(1)
    ecgs = torch.randn(CHECK_BATCH, model.encoder.n_leads, N_SAMPLES, generator=gen).to(device)
    mask = SlotMask.of(multiblock_mask(generator=gen), CHECK_BATCH, device)
    got, base = (_loss_and_grads(m, ecgs, mask, dtype) for m in (model, same))
    oracle = _loss_and_grads(wide, ecgs, mask, torch.float64)
    return compare("train step", got, base, oracle, dtype)


def _judged(preset: str, device: torch.device, impl: str, compiled: bool, dtype: torch.dtype) -> tuple[JEPA, str, bool]:
    """A variant's model (compiled if asked), its verdict against its reference-attention twins (copied
    before compiling, freed on return) and whether it passed."""
    model = build(preset, device, impl)
    same, wide = attention_twin(model), attention_twin(model, torch.float64)
    if compiled:
        model.compile_blocks()
    return (model, *judge(lambda: step_parity(model, same, wide, dtype)))


def make_step(model: JEPA, batch: int, device: torch.device, dtype: torch.dtype, n_masks: int = 4):
    """A warmed-up training step of ``model`` (compiled or not): a callable that runs one step with the
    next of ``n_masks`` cycled multi-block masks."""
    ecgs = torch.randn(batch, model.encoder.n_leads, N_SAMPLES, device=device)
    gen = torch.Generator().manual_seed(0)
    masks = [SlotMask.of(multiblock_mask(generator=gen), batch, device) for _ in range(n_masks)]
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=device.type == "cuda")
    warm_up_kernels(model, device, precision)
    autocast = _autocast(device, dtype)
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
    """One row per (attention backend, compiled) variant: parity against the reference twins, then the
    time of a step."""
    out = []
    for impl, compiled in variants:
        row = Row("train step", f"{preset} B{batch} multiblock", str(dtype).removeprefix("torch."),
                  f"{impl}, compiled" if compiled else impl)
        out.append(row)
        model, row.parity, ok = _judged(preset, device, impl, compiled, dtype)
        if not ok:
            continue
        row.fwd_bwd = time_call(make_step(model, batch, device, dtype, n_masks), device, budget)
        row.extra["ecg_per_s"] = batch / (row.fwd_bwd.median / 1e3)
    return out
