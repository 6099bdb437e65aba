"""The benchmark suite: ``ecg-jepa bench --quick`` as a smoke check (no timing assertions), on the GPU when
there is one, else on the CPU; every row's verdict from a check that ran (a wrong backend's row says FAIL
and is not timed); the performance model's measured numbers from the committed result files."""
import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from ecg_jepa.benchmarks import bench_block, bench_cropa, bench_train_step, perf_model, tune_cropa
from ecg_jepa.benchmarks.verdict import UNCHECKED, passed
from ecg_jepa.cli import main
from ecg_jepa.ops.cropa import BACKENDS
from ecg_jepa.ops.cropa import triton as launch

CPU = torch.device("cpu")


def test_bench_quick_writes_results(tmp_path, capsys):
    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| attention |" in out and "| patch embed |" in out and "| train step |" in out
    assert "| shard loader |" in out and "ECG/s" in out and "Parity: `ok`" in out
    (result,) = tmp_path.glob("bench-*.json")
    data = json.loads(result.read_text())
    assert data["machine"]["torch"] and data["machine"]["commit"]
    rows = {(r["case"], r["impl"]): r for r in data["rows"]}
    for impl in ("reference", "sdpa", "structured"):  # backends of every device pass parity and get timed
        row = rows[("attention", impl)]
        assert passed(row["parity"]) and row["fwd"]["median"] > 0 and row["fwd_bwd"]["median"] > 0
    for key in (("encoder block", "auto"), ("encoder block", "reference"), ("train step", "auto")):
        assert passed(rows[key]["parity"]) and rows[key]["fwd_bwd"]["median"] > 0  # compared with their twins
    assert rows[("attention", "dense")]["parity"].startswith("n/a")
    assert rows[("shard loader", "ours")]["parity"].startswith("n/a")
    assert all(r["parity"] != UNCHECKED for r in data["rows"])
    cuda = rows[("attention", "cuda")]
    if torch.cuda.is_available():  # the extension builds here (a CUDA machine has the toolkit) and is timed
        assert passed(cuda["parity"]) and cuda["fwd_bwd"]["median"] > 0
    else:
        assert cuda["parity"].startswith("skipped")
    for suffix in (".csv", ".md", ".png"):
        assert result.with_suffix(suffix).exists()


def test_no_verdict_is_typed_into_the_benchmarks():
    """Only verdict.py names the passing verdict; every other module gets it from a check that ran."""
    for path in Path(bench_cropa.__file__).parent.glob("*.py"):
        if path.name != "verdict.py":
            assert not re.search(r"""["']ok["']""", path.read_text()), path


@pytest.fixture
def wrong_attention(monkeypatch):
    """Every CroPA backend but ``reference`` answers 1 % too large (its gradients too)."""
    for name, backend in list(BACKENDS.items()):
        if name != "reference":
            monkeypatch.setitem(BACKENDS, name, dataclasses.replace(backend, run=lambda *a, run=backend.run: 1.01 * run(*a)))


def _failed_untimed(row) -> bool:
    return row.parity.startswith("FAIL ") and " > " in row.parity and row.fwd is None and row.fwd_bwd is None


def test_wrong_attention_fails_and_is_not_timed(wrong_attention):
    shape = bench_cropa.AttnShape(1, 2, 4, 8, 16)
    wrong, right = bench_cropa.rows(shape, torch.float32, CPU, 0.01, impls=("sdpa", "reference"))
    assert _failed_untimed(wrong), wrong.parity
    assert passed(right.parity) and right.fwd_bwd is not None


def test_wrong_attention_fails_the_encoder_block(wrong_attention):
    wrong, right = bench_block.rows("tiny", 2, CPU, torch.float32, 0.01)
    assert wrong.impl == "auto" and _failed_untimed(wrong), wrong.parity
    assert passed(right.parity) and right.fwd_bwd is not None


def test_wrong_attention_fails_the_training_step(wrong_attention):
    (wrong,) = bench_train_step.rows("tiny", 2, CPU, torch.float32, 0.01, variants=(("auto", False),))
    assert _failed_untimed(wrong), wrong.parity
    assert "ecg_per_s" not in wrong.extra


@pytest.mark.parametrize("kernel, scale_at", [("fwd_launch", 6), ("bwd_launch", 11)])
def test_tune_cropa_checks_forward_and_backward_before_timing(monkeypatch, kernel_device, kernel, scale_at):
    """A configuration whose forward (or backward alone) is wrong is reported and not timed."""
    shape = bench_cropa.AttnShape(1, 1, 2, 4, 16)
    cfg = launch.config(shape.leads, shape.slots, shape.d, torch.float32)
    good = tune_cropa.measure(shape, torch.float32, cfg, 0.01, kernel_device)
    assert passed(good["parity"]) and good["fwd_ms"] > 0 and good["bwd_ms"] > 0
    original = getattr(launch, kernel)
    monkeypatch.setattr(launch, kernel, lambda *a: original(*a[:scale_at], 1.01 * a[scale_at], *a[scale_at + 1:]))
    bad = tune_cropa.measure(shape, torch.float32, cfg, 0.01, kernel_device)
    assert bad["parity"].startswith("FAIL ") and bad["fwd_ms"] is None and bad["bwd_ms"] is None
    assert bad["parity"].startswith("FAIL out") == (kernel == "fwd_launch")


def test_perf_model_reads_its_measurements(monkeypatch, tmp_path):
    recorded = json.loads((perf_model.MEASURED / "bench-kernels.json").read_text())
    assert perf_model.ceiling("copy_GBps") == recorded["machine"]["ceilings"]["copy_GBps"]
    monkeypatch.setattr(perf_model, "MEASURED", tmp_path)
    perf_model.measured.cache_clear()
    with pytest.raises(FileNotFoundError, match="is missing"):
        perf_model.bench_ms("triton", "B64 H16 L8xT50=N400 d48", "fwd")
    perf_model.measured.cache_clear()


@pytest.mark.parametrize("preset,n_visible", [("tiny", 20), ("vit-b", 17)])
def test_step_budget_counts_the_flops_the_logged_mfu_uses(preset, n_visible):
    """The step budget counts FLOPs from the model's own layers; the MFU the training log reports counts them
    from the architecture's formula: the two agree, and the report sets the measured profile beside them."""
    from ecg_jepa.benchmarks import step_budget
    from ecg_jepa.model.jepa import JEPA
    from ecg_jepa.train.metrics import step_flops

    parts = step_budget.budget(preset, batch=4, n_visible=n_visible)
    counted = sum(p.gemm_flops + p.attn_flops for p in parts)
    assert counted == pytest.approx(step_flops(JEPA(preset), 4, n_visible), rel=1e-12)
    text = step_budget.report(parts, {"device": "a card", "bf16_TFLOPs": 500.0, "copy_GBps": 3000.0}, 4,
                              {"GEMM": 2.0, "attention forward": 1.0, "norm": 0.5}, "a profile")
    assert "| GEMM |" in text and "measured / floor" in text


def test_step_budget_reads_the_committed_profile():
    from ecg_jepa.benchmarks import step_budget

    groups = step_budget.measured_groups(step_budget.DEFAULT_RESULT / "profile-train-step-eager.md")
    assert {"GEMM", "norm", "copies and layout"} <= set(groups) and all(ms > 0 for ms in groups.values())
