"""CroPA attention, forward+backward, every backend that trains on this device (pytest-benchmark).

CPU shape (issue 3): B=16, H=8, N=400 (8 leads x 50), d=64, fp32. GPU: the paper's B=64, H=16, d=48, bf16.
"""
import pytest
import torch

from ecg_jepa import cropa_attention
from ecg_jepa.ops.cropa import BACKENDS

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
B, H, L, T, D = (64, 16, 8, 50, 48) if CUDA else (16, 8, 8, 50, 64)
DTYPE = torch.bfloat16 if CUDA else torch.float32


def _inputs():
    q, k, v = (torch.randn(B, H, L * T, D, device=DEVICE, dtype=DTYPE, requires_grad=True) for _ in range(3))
    return q, k, v, torch.randn_like(q)


def _sync():
    if CUDA:
        torch.cuda.synchronize()


@pytest.mark.parametrize("backend", ["reference", "sdpa", "flex", "structured", "triton", "cuda"])
def test_cropa_fwd_bwd(benchmark, backend):
    q, k, v, g = _inputs()
    reason = BACKENDS[backend].why_not(q, True)
    if reason or (backend == "triton" and not CUDA):
        pytest.skip(reason or "Triton on the CPU interpreter is not a speed to report")

    def step():
        cropa_attention(q, k, v, L, backend=backend).backward(g)
        _sync()

    benchmark(step)
