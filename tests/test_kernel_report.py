"""The offline kernel report: every kernel compiles for sm_90 and sm_80 without spills and with 16-byte
accesses on its wide side (run as CI runs it), and the compiled variants of the Triton CroPA kernels are
few and known however the visible slot count changes."""
import os
import subprocess
import sys

import pytest
import torch

VARIANT_SCRIPT = r"""
import sys, torch
from ecg_jepa.kernel_report import variant_key
from ecg_jepa.ops.cropa import triton as launch
keys = {"fwd": set(), "bwd": set()}
h, n_leads, d = 16, 8, 48
for t in range(1, 101):
    qkv = torch.empty(4, n_leads * t, 3, h, d, dtype=torch.bfloat16)  # as CroPAAttention makes them
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty(4, h, n_leads * t)
    cfg = launch.config(n_leads, t, d, q.dtype)
    kernel, _, args, kwargs = launch.fwd_launch(q, k, v, out, lse, n_leads, 0.1, cfg)
    keys["fwd"].add(variant_key(kernel, args, kwargs))
    g = [torch.empty_like(out) for _ in range(4)]
    kernel, _, args, kwargs = launch.bwd_launch(g[0], q, k, v, out, lse, torch.empty_like(lse), *g[1:], n_leads, 0.1, cfg)
    keys["bwd"].add(variant_key(kernel, args, kwargs))
print(len(keys["fwd"]), len(keys["bwd"]))
"""

SPLIT_VARIANT_SCRIPT = r"""
import torch
from ecg_jepa.kernel_report import variant_key
from ecg_jepa.ops.cropa import split
h, n_leads, d = 16, 8, 48
def keys(slot_counts):
    found = set()
    for t in slot_counts:
        qkv = torch.empty(4, n_leads * t, 3, h, d, dtype=torch.bfloat16)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out, g, dq, dk, dv = (split.token_major(4, h, n_leads * t, d, q) for _ in range(5))
        lse = torch.empty(4, n_leads, h, split.padded_slots(t))
        launches = [split.column_fwd_launch(q, k, v, out, lse, n_leads, 0.1),
                    split.column_bwd_launch(g, q, k, v, out, lse, dq, dk, dv, n_leads, 0.1)]
        if t <= split.ROW_TRITON_MAX_SLOTS:  # the Triton row kernels (above: the library's, nothing to compile)
            launches += [split.row_fwd_launch(q, k, v, out, lse, n_leads, 0.1),
                         split.row_bwd_launch(g, q, k, v, out, lse, dq, dk, dv, n_leads, 0.1)]
        for kernel, _, args, kwargs in launches:
            found.add(variant_key(kernel, args, kwargs))
    return found
every, warmed = keys(range(1, 101)), keys(split.WARM_UP_SLOTS)
print(len(every), len(warmed), int(every <= warmed))
"""


def _python(code_or_args, **env):
    cmd = [sys.executable, "-c", code_or_args] if isinstance(code_or_args, str) else [sys.executable, *code_or_args]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TRITON_INTERPRET": "0", **env},
                            timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout


@pytest.mark.slow
def test_slot_counts_compile_a_bounded_set_of_variants():
    """T = 1..100 (every visible slot count a training run can meet, and more) makes at most as many
    variants as there are slot tiles: no compilation in the middle of training once they are warm."""
    from ecg_jepa.ops.cropa.triton import SLOT_TILES

    n_fwd, n_bwd = map(int, _python(VARIANT_SCRIPT).split())
    assert 1 <= n_fwd <= len(SLOT_TILES) and 1 <= n_bwd <= len(SLOT_TILES), (n_fwd, n_bwd)


@pytest.mark.slow
def test_split_warm_up_meets_every_kernel_variant():
    """The split backend's Triton kernels (row and column) compile a few variants for T = 1..100, and its
    warm-up (``split.WARM_UP_SLOTS``) compiles every one of them: none compiles in the middle of training."""
    from ecg_jepa.ops.cropa.split import WARM_UP_SLOTS

    n_every, n_warmed, covered = map(int, _python(SPLIT_VARIANT_SCRIPT).split())
    assert covered == 1 and n_every == n_warmed <= 4 * len(WARM_UP_SLOTS)


@pytest.mark.slow
def test_kernel_report_passes_its_check(tmp_path):
    """No spill, 16-byte wide-side accesses, tensor-core instructions in the attention kernels (bf16/fp16),
    Triton's and the CUDA extension's alike."""
    import json

    out = _python(["-m", "ecg_jepa.kernel_report", "--check", "--json", str(tmp_path / "report.json")])
    rows = json.loads((tmp_path / "report.json").read_text())
    assert "| cropa_fwd_kernel |" in out and {r["arch"] for r in rows} == {80, 90}
    kernels = {r["kernel"] for r in rows}
    assert {"cropa_fwd_kernel<__nv_bfloat16, 3>", "cropa_bwd_kernel<__half, 3>", "patch_embed_fwd_kernel<__nv_bfloat16>",
            "cropa_col_fwd_kernel", "cropa_col_bwd_kernel"} <= kernels
    for r in rows:
        assert r["spill_bytes"] == 0 and r["local_accesses"] == 0, r
        if r["kernel"].startswith("cropa_fwd_kernel<"):  # the CUDA forward: ldmatrix, 16-byte cp.async, mma
            assert r["ldsm"] > 0 and r["wide_side"].get("LDGSTS.E.128", 0) > 0 and r["threads"] in (256, 512), r
        if r["kernel"].startswith("cropa_bwd_kernel<"):  # the CUDA backward: the same, 8 warps
            assert r["ldsm"] > 0 and r["wide_side"].get("LDGSTS.E.128", 0) > 0 and r["threads"] == 256, r
        if r["needs_wide"]:
            assert r["narrowest_wide"] == 16, r
        if r["needs_tensor_cores"] or (r["kernel"].startswith("cropa_") and r["needs_wide"] and "delta" not in r["kernel"]):
            assert r["tensor_core"] > 0, r
    assert torch.__version__  # the report ran against the installed torch
