"""The fused patch embedding (a multi-block-sized mask: 27 of 50 slots visible) against the unfused
torch path, each backend parity-checked first; forward and forward+backward (dx, dW, db). Timed as the
encoder calls it in training (mask validated and lead ids on the device once, no finiteness check), so
the times are the GPU work's, not the host's validation of the mask."""
from __future__ import annotations

import unittest

import torch

from ecg_jepa.ops.layout import SlotMask
from ecg_jepa.ops.patch_embed import BACKENDS, patch_embed
from ecg_jepa.ops.patch_embed.testing import parity
from ecg_jepa.ops.registry import InputSpec

from .report import Row
from .timing import time_call
from .verdict import judge, skipped

N_VISIBLE = 27


def _inputs(b: int, dim: int, dtype: torch.dtype, device: torch.device):
    gen = torch.Generator().manual_seed(0)
    mask = torch.randperm(50, generator=gen) >= N_VISIBLE
    x = torch.randn(b, 8, 2500, device=device, dtype=dtype)
    w = torch.randn(dim, 50, device=device, dtype=dtype) * 0.1
    bias = torch.randn(dim, device=device, dtype=dtype)
    pos = torch.randn(400, dim, device=device)
    return x, w, bias, pos, mask.to(device)


def why_not_timed(impl: str, x: torch.Tensor) -> str | None:
    reasons = BACKENDS[impl].why_not(InputSpec.of(x, True))
    if not reasons and impl == "triton" and not x.is_cuda:
        return "CPU interpreter: correct but not a speed to report"
    return "; ".join(reasons) or None


def rows(b: int, dim: int, dtype: torch.dtype, device: torch.device, budget: float) -> list[Row]:
    x, w, bias, pos, mask = _inputs(b, dim, dtype, device)
    n_tok = 8 * N_VISIBLE
    nbytes = b * n_tok * (50 + dim) * x.element_size()  # read each visible patch once, write each token once
    grad = torch.randn(b, n_tok, dim, device=device, dtype=dtype)
    out = []
    for impl in BACKENDS:
        row = Row("patch embed", f"B{b} 8x2500 -> {n_tok} tok x D{dim}", str(dtype).removeprefix("torch."), impl,
                  flops=2.0 * b * n_tok * 50 * dim, bytes=nbytes)
        out.append(row)
        reason = why_not_timed(impl, x)
        if reason is not None:
            row.parity = skipped(reason)
            continue
        row.parity, ok = judge(lambda: parity(impl, x[:1], w, bias, pos, mask, grad=grad[:1]))
        if not ok:
            continue
        trusted = dict(mask=SlotMask.of(mask, b), leads=torch.arange(8, device=device, dtype=torch.int32),
                       backend=impl, check_finite=False)
        with torch.no_grad():
            row.fwd = time_call(lambda: patch_embed(x, w, bias, pos, **trusted), device, budget)
        leaves = [t.detach().requires_grad_() for t in (x, w, bias)]
        row.fwd_bwd = time_call(lambda: patch_embed(*leaves, pos, **trusted).backward(grad), device, budget)
    return out


def test_patch_embed_fwd_bwd(benchmark, backend):
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    x, w, bias, pos, mask = _inputs(64, 768, torch.bfloat16 if cuda else torch.float32, device)
    reason = why_not_timed(backend, x)
    if reason:
        raise unittest.SkipTest(reason)
    leaves = [t.requires_grad_() for t in (x, w, bias)]
    grad = torch.randn(64, 8 * N_VISIBLE, 768, device=device, dtype=x.dtype)

    def step():
        patch_embed(*leaves, pos, mask=mask, backend=backend).backward(grad)
        if cuda:
            torch.cuda.synchronize()

    benchmark(step)


BENCH_PARAMS = {"backend": list(BACKENDS)}
