"""One encoder block (LayerNorm, CroPA attention, MLP) on all 400 tokens: ours (attention ``auto``)
against the same block with the ``reference`` attention; forward and forward+backward. Each block is
first compared with its reference-attention twin (same weights, same input; output, input gradient and
weight gradients) and timed only if it agrees."""
from __future__ import annotations

import torch

from ecg_jepa.constants import N_SLOTS
from ecg_jepa.model.jepa import PRESETS
from ecg_jepa.model.vit import Block
from ecg_jepa.ops.parity import Parity

from .report import Row
from .timing import time_call
from .verdict import CHECK_BATCH, attention_twin, compare, judge

N_LEADS = 8


def _run(block: Block, x: torch.Tensor, grad: torch.Tensor) -> dict[str, torch.Tensor]:
    """The block's output, and the gradients of its input and weights for the output gradient ``grad``."""
    x = x.detach().requires_grad_()
    out = block(x, N_LEADS)
    out.backward(grad)
    result = {"out": out.detach(), "dx": x.grad,
              **{f"d{name}": p.grad.clone() for name, p in block.named_parameters()}}
    block.zero_grad(set_to_none=True)
    return result


def block_parity(block: Block, x: torch.Tensor) -> Parity:
    """``block`` on x against its reference-attention twin in x's dtype and in float64."""
    grad = torch.randn_like(x)
    got = _run(block, x, grad)
    base = _run(attention_twin(block), x, grad)
    oracle = _run(attention_twin(block, torch.float64), x.double(), grad.double())
    return compare(f"encoder block ({block.attn.backend})", got, base, oracle, x.dtype)


def rows(preset: str, batch: int, device: torch.device, dtype: torch.dtype, budget: float,
         impls: tuple[str, ...] = ("auto", "reference")) -> list[Row]:
    """One row per attention backend in ``impls``: parity against the reference twin, then the times."""
    cfg = PRESETS[preset].encoder
    x = torch.randn(batch, N_LEADS * N_SLOTS, cfg.dim, device=device, dtype=dtype)
    out = []
    for impl in impls:
        torch.manual_seed(0)
        block = Block(cfg.dim, cfg.num_heads).to(device, dtype)
        block.attn.backend = impl
        row = Row("encoder block", f"B{batch} N{x.shape[1]} D{cfg.dim} H{cfg.num_heads}",
                  str(dtype).removeprefix("torch."), impl)
        out.append(row)
        row.parity, ok = judge(lambda: block_parity(block, x[:CHECK_BATCH]))
        if not ok:
            continue
        with torch.no_grad():
            row.fwd = time_call(lambda: block(x, N_LEADS), device, budget)
        row.fwd_bwd = time_call(lambda: block(x, N_LEADS).sum().backward(), device, budget)
    return out
