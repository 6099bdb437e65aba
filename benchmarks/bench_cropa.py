"""CroPA attention: every backend (and unmasked dense SDPA, the speed of light of dense attention, not
CroPA), parity-checked against the float64 oracle, then forward and forward+backward timed.

``ecg-jepa bench`` calls :func:`rows`; ``pytest benchmarks/ --benchmark-only`` runs :func:`test_cropa_fwd_bwd`
(CPU: B=16, H=8, N=400, d=64, fp32; GPU: the paper's B=64, H=16, d=48, bf16).
"""
from __future__ import annotations

import contextlib
import unittest
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ecg_jepa.ops.cropa import BACKENDS, cropa_attention
from ecg_jepa.ops.cropa.testing import parity
from ecg_jepa.ops.registry import InputSpec

from .report import Row
from .timing import time_call
from .verdict import judge, not_applicable, skipped


@dataclass(frozen=True)
class AttnShape:
    b: int
    h: int
    leads: int
    slots: int
    d: int

    @property
    def n(self) -> int:
        return self.leads * self.slots

    def __str__(self) -> str:
        return f"B{self.b} H{self.h} L{self.leads}xT{self.slots}=N{self.n} d{self.d}"


SHAPES = {
    "quick": [AttnShape(2, 2, 8, 50, 16)],
    "cpu": [AttnShape(16, 8, 8, 50, 64), AttnShape(16, 8, 8, 23, 64), AttnShape(16, 8, 12, 50, 64),
            AttnShape(16, 8, 8, 10, 64), AttnShape(4, 8, 8, 50, 64)],
    # The paper's shapes: the full ECG, the visible slots of multi-block and random masks, 12 leads.
    "gpu": [AttnShape(64, 16, 8, 50, 48), AttnShape(64, 16, 8, 23, 48), AttnShape(128, 16, 8, 17, 48),
            AttnShape(64, 16, 12, 50, 48), AttnShape(64, 16, 8, 100, 48), AttnShape(64, 16, 8, 10, 48),
            AttnShape(256, 16, 8, 50, 48), AttnShape(16, 16, 8, 50, 48)],
}
SHAPES["goal"] = SHAPES["gpu"][:4]  # the shapes of the speed goals (benchmarks/results/performance-model.md)


def dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_leads: int) -> torch.Tensor:
    """Unmasked dense SDPA: every token attends every token (not CroPA; never parity-checked)."""
    return F.scaled_dot_product_attention(q, k, v)


ROW_PASS = ("row-efficient", "row-flash", "row-cudnn")
"""The split backend's row pass alone (not CroPA: L dense T x T attentions on the free (B·L, H, T, d) view)
with each of PyTorch's fused kernels forced, to choose the one split is built on; CUDA only."""


SPLIT_LIBRARY = "split-library"
"""The split backend with its row pass on PyTorch's memory-efficient kernel even where its Triton row
kernels run (``split.ROW_KERNEL``), to measure the two side by side."""


@contextlib.contextmanager
def _row_kernel(impl: str):
    from ecg_jepa.ops.cropa import split

    before = split.ROW_KERNEL["choice"]
    split.ROW_KERNEL["choice"] = "library" if impl == SPLIT_LIBRARY else before
    try:
        yield
    finally:
        split.ROW_KERNEL["choice"] = before


def row_pass(kernel: str):
    """``(q, k, v, n_leads) -> out``: the row pass with PyTorch's ``kernel`` ("efficient", "flash", "cudnn")."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ecg_jepa.ops.cropa.split import bmhk

    backend = {"efficient": SDPBackend.EFFICIENT_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
               "cudnn": SDPBackend.CUDNN_ATTENTION}[kernel]

    def run(q, k, v, n_leads):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(*(bmhk(x, n_leads).transpose(1, 2) for x in (q, k, v)))

    return run


def _fn(impl: str):
    if impl == "dense":
        return dense
    if impl == SPLIT_LIBRARY:
        return lambda q, k, v, n_leads: cropa_attention(q, k, v, n_leads, backend="split")
    if impl in ROW_PASS:
        return row_pass(impl.removeprefix("row-"))
    return lambda q, k, v, n_leads: cropa_attention(q, k, v, n_leads, backend=impl)


def why_not_timed(impl: str, x: torch.Tensor, n_leads: int, grad: bool) -> str | None:
    """Why ``impl`` is not timed on inputs like x (None: it is)."""
    if impl == "dense":
        return None
    if impl in ROW_PASS or impl == SPLIT_LIBRARY:
        return None if x.is_cuda else f"the {impl} rows are measured on a GPU"
    reasons = BACKENDS[impl].why_not(InputSpec.of(x, grad, n_leads))
    if not reasons and impl == "triton" and not x.is_cuda:
        return "CPU interpreter: correct but not a speed to report"
    return "; ".join(reasons) or None


def packed_inputs(shape: AttnShape, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs as :class:`~ecg_jepa.CroPAAttention` makes them: one (B, N, 3, H, d) projection whose q, k, v
    are ``qkv.permute(2, 0, 3, 1, 4)`` views (gradients accumulate into it), and an output gradient
    (B, H, N, d) over (B, N, H, d) memory (what ``out.transpose(1, 2).reshape(B, N, D)`` passes back)."""
    qkv = torch.randn(shape.b, shape.n, 3, shape.h, shape.d, device=device, dtype=dtype)
    grad_out = torch.randn(shape.b, shape.n, shape.h, shape.d, device=device, dtype=dtype).transpose(1, 2)
    return qkv, grad_out


def rows(shape: AttnShape, dtype: torch.dtype, device: torch.device, budget: float,
         impls: tuple[str, ...] | None = None) -> list[Row]:
    """One row per backend (and ``dense``; or per name in ``impls``): parity, forward and forward+backward
    (to the packed projection, as in the model: :func:`packed_inputs`)."""
    qkv, g = packed_inputs(shape, dtype, device)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    keys = shape.slots + shape.leads - 1  # every query meets T + L - 1 keys
    flops = 4.0 * shape.b * shape.h * shape.n * shape.d * keys
    nbytes = 4.0 * shape.b * shape.h * shape.n * shape.d * q.element_size()
    out = []
    for impl in impls or (*BACKENDS, "dense"):
        row = Row("attention", str(shape), str(dtype).removeprefix("torch."), impl, flops=flops, bytes=nbytes)
        out.append(row)
        with _row_kernel(impl):
            _measure(row, impl, shape, qkv, g, device, budget)
    return out


def _measure(row: Row, impl: str, shape: AttnShape, qkv: torch.Tensor, g: torch.Tensor, device: torch.device,
             budget: float) -> None:
    """Check ``impl``'s parity on a batch of one, then time its forward and forward+backward into ``row``."""
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    reason = why_not_timed(impl, q, shape.leads, False)
    if reason is not None:
        row.parity = skipped(reason)
        return
    train_reason = why_not_timed(impl, q, shape.leads, True)
    if impl in ROW_PASS or impl == "dense":
        row.parity = not_applicable("the row pass alone, not CroPA" if impl in ROW_PASS else "every key, not CroPA")
    else:
        name = "split" if impl == SPLIT_LIBRARY else impl
        row.parity, ok = judge(lambda: parity(name, q[:1], k[:1], v[:1], shape.leads, None if train_reason else g[:1]))
        if not ok:
            return
    fn = _fn(impl)
    if impl in ROW_PASS:
        try:  # a kernel PyTorch will not run at this shape is reported, not fatal
            fn(q, k, v, shape.leads)
        except RuntimeError as e:
            row.parity = not_applicable((str(e).splitlines() or [""])[0][:100])
            return
    with torch.no_grad():
        row.fwd = time_call(lambda: fn(q, k, v, shape.leads), device, budget)
    if train_reason:
        row.extra["fwd_bwd"] = f"n/a: {train_reason}"
        return
    leaf = qkv.detach().requires_grad_()
    if impl in ROW_PASS:  # its output is the (B·L, H, T, d) view
        from ecg_jepa.ops.cropa.split import bmhk

        g = bmhk(g, shape.leads).transpose(1, 2)

    def step():
        fn(*leaf.permute(2, 0, 3, 1, 4), shape.leads).backward(g)
        leaf.grad = None

    row.fwd_bwd = time_call(step, device, budget)


def test_cropa_fwd_bwd(benchmark, backend):
    """pytest-benchmark: forward+backward of one backend at the suite's first shape for this device."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    shape = SHAPES["gpu" if cuda else "cpu"][0]
    qkv, g = packed_inputs(shape, torch.bfloat16 if cuda else torch.float32, device)
    qkv.requires_grad_()
    reason = why_not_timed(backend, qkv[:, :, 0].transpose(1, 2), shape.leads, True)
    if reason:
        raise unittest.SkipTest(reason)

    def step():
        _fn(backend)(*qkv.permute(2, 0, 3, 1, 4), shape.leads).backward(g)
        if cuda:
            torch.cuda.synchronize()

    benchmark(step)


BENCH_PARAMS = {"backend": [*BACKENDS, "dense"]}
