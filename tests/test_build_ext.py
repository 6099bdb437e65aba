"""The CUDA extension: every kernel compiles for sm_80 and sm_90 without register spills, the extension
builds against the installed torch and imports, its ops trace with fake tensors. Its GPU parity tests sit
with each op's other tests (test_cropa.py, test_patch_embed.py)."""
import re
import subprocess
from pathlib import Path

import pytest
import torch

from ecg_jepa import build_ext, explain_backend
from ecg_jepa.limits import SMEM_PER_CTA

try:
    CUDA_HOME = build_ext.cuda_home()
except build_ext.BuildError:
    CUDA_HOME = None
needs_toolkit = pytest.mark.skipif(CUDA_HOME is None or torch.version.cuda is None, reason="no CUDA toolkit / CPU torch")
KERNEL_SOURCES = sorted(build_ext.CSRC.glob("*.cu"))
SMEM_LIMIT = {"sm_80": 48 * 1024, "sm_90": 48 * 1024}  # static shared memory per block


@needs_toolkit
@pytest.mark.parametrize("source", KERNEL_SOURCES, ids=lambda p: p.name)
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernels_compile_without_spills(source, arch, tmp_path):
    cmd = [str(Path(CUDA_HOME) / "bin" / "nvcc"), *build_ext.cuda_flags(), "-Xptxas", "-v",
           f"-gencode=arch=compute_{arch[3:]},code={arch}", "-I", str(build_ext.CSRC), "-c", str(source),
           "-o", str(tmp_path / "k.o")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    entries = re.findall(r"Compiling entry function '(\w+)'.*?\n(.*?spill stores, \d+ bytes spill loads)", result.stderr, re.S)
    assert entries, "no kernels reported by ptxas"
    for name, stats in entries:
        stores, loads = map(int, re.findall(r"(\d+) bytes spill", stats))
        assert stores == 0 and loads == 0, f"{name} spills on {arch}: {stats}"
    for smem in map(int, re.findall(r"(\d+) bytes smem", result.stderr)):
        assert smem <= SMEM_LIMIT[arch]


@needs_toolkit
def test_extension_builds_imports_and_traces():
    from ecg_jepa.ops.cropa import cuda as cropa_cuda
    from ecg_jepa.ops.patch_embed import cuda as embed_cuda

    fwd, _ = cropa_cuda.ops()
    embed_cuda.ops()
    q = torch.empty(2, 3, 40, 48, device="meta", requires_grad=True)
    out, lse = fwd(q, q, q, 8, 0.1)
    assert out.shape == q.shape and lse.shape == (2, 3, 40) and lse.dtype == torch.float32
    out.sum().backward()  # autograd registered: the backward op's fake runs
    assert q.grad.shape == q.shape
    x = torch.empty(2, 8, 2500, device="meta")
    tokens = torch.ops.ecg_jepa.patch_embed_cuda(
        x, torch.empty(64, 50, device="meta"), torch.empty(64, device="meta"), torch.empty(400, 64, device="meta"),
        torch.empty(1, 27, dtype=torch.int32, device="meta"), torch.empty(8, dtype=torch.int32, device="meta"))
    assert tokens.shape == (2, 216, 64)
    assert "CUDA_VERIFIED" in explain_backend(torch.zeros(1, 1, 16, 16), n_leads=4)
    h100 = SMEM_PER_CTA[(9, 0)]
    fwd_bytes, bwd_group, bwd_bytes = torch.ops.ecg_jepa.cropa_cuda_plan(2, 8, 50, 48, h100)  # bf16, L8 T50
    assert bwd_group == 8 and 0 < fwd_bytes < bwd_bytes <= h100 // 2  # a (batch, head) per CTA, two CTAs per SM
    assert (fwd_bytes, bwd_group, bwd_bytes) == cropa_cuda.plan(8, 50, 48, 2, h100)  # the Python mirror
