"""Pretraining loop, schedules, checkpoints, probe and the CLI."""
import json

import numpy as np
import pytest
import torch

from ecg_jepa import JEPA, load_encoder
from ecg_jepa.cli import main
from ecg_jepa.data.synthetic import SyntheticECG
from ecg_jepa.eval.probe import linear_probe
from ecg_jepa.train.pretrain import PretrainConfig, pretrain, step_mask
from ecg_jepa.train.schedule import cosine_lr, ema_momentum


def test_schedules():
    assert cosine_lr(0, 100, 10, 1e-3) == pytest.approx(1e-6)
    assert cosine_lr(10, 100, 10, 1e-3) == pytest.approx(1e-3)
    assert cosine_lr(100, 100, 10, 1e-3) == pytest.approx(1e-6)
    assert cosine_lr(55, 100, 10, 1e-3) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5)
    assert ema_momentum(0, 10) == pytest.approx(0.996) and ema_momentum(10, 10) == pytest.approx(1.0)


def test_step_masks_are_reproducible():
    cfg = PretrainConfig(seed=3)
    assert torch.equal(step_mask(cfg, 5), step_mask(cfg, 5))
    assert not all(torch.equal(step_mask(cfg, 5), step_mask(cfg, s)) for s in range(6, 10))


class CrashingECG(SyntheticECG):
    """Fails like a killed run once ``crash_at`` items have been read."""

    def __init__(self, n, crash_at):
        super().__init__(n)
        self.reads, self.crash_at = 0, crash_at

    def __getitem__(self, i):
        self.reads += 1
        if self.reads > self.crash_at:
            raise KeyboardInterrupt("simulated interruption")
        return super().__getitem__(i)


def test_interrupted_run_resumes_bit_identical(tmp_path):
    cfg = PretrainConfig(steps=6, batch_size=4, checkpoint_every=2, workers=0, lr=1e-3)
    full = pretrain(cfg, SyntheticECG(16), tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, CrashingECG(16, crash_at=4 * 4 + 2), tmp_path / "cut", progress=False)  # dies in step 5
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["step"] == 4
    resumed = pretrain(cfg, SyntheticECG(16), tmp_path / "cut", resume=True, progress=False)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    steps = [json.loads(line)["step"] for line in open(tmp_path / "cut" / "log.jsonl")]
    assert steps == [0, 1, 2, 3, 4, 5]  # step 4 of the dead run never finished, so it was never logged


def test_resume_refuses_another_configuration(tmp_path):
    cfg = PretrainConfig(steps=1, batch_size=2, workers=0)
    pretrain(cfg, SyntheticECG(4), tmp_path, progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        pretrain(PretrainConfig(steps=2, batch_size=2, workers=0), SyntheticECG(4), tmp_path, resume=True, progress=False)


def test_pretrain_checkpoint_loads_as_encoder(tmp_path):
    model = pretrain(PretrainConfig(steps=1, batch_size=2, workers=0), SyntheticECG(4), tmp_path, progress=False)
    enc = load_encoder(tmp_path / "checkpoint.pt")
    x = torch.randn(1, 8, 2500)
    assert torch.equal(enc(x), model.encoder.eval()(x))


def test_linear_probe_learns_a_separable_task(seed):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, size=(4, 16))
    y = rng.integers(4, size=800)
    x = (centers[y] + rng.normal(size=(800, 16))).astype(np.float32)
    result = linear_probe((x[:400], y[:400]), (x[400:], y[400:]), n_classes=4)
    assert result.accuracy > 0.9 and result.macro_auroc > 0.95
    noise = rng.normal(size=x.shape).astype(np.float32)
    chance = linear_probe((noise[:400], y[:400]), (noise[400:], y[400:]), n_classes=4)
    assert chance.macro_auroc < 0.62  # features unrelated to the labels: near 0.5


def test_cli_pretrain_end_to_end(tmp_path, capsys):
    code = main(["pretrain", "--steps", "3", "--batch-size", "4", "--train-size", "16", "--probe-train", "24",
                 "--probe-test", "24", "--workers", "0", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "pretrained" in out and "random init" in out and "macro AUROC" in out
    assert (tmp_path / "encoder.pt").exists() and (tmp_path / "checkpoint.pt").exists()


def test_cli_help_and_errors(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    assert "--resume" in capsys.readouterr().out
    assert main(["pretrain", "--steps", "0", "--out", "/tmp/never"]) == 2
    assert "steps and batch_size must be positive" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["pretrain", "--device", "cuda", "--out", "/tmp/never"]) == 2
        assert "no CUDA device" in capsys.readouterr().err


def _run(cmd, cwd):
    import subprocess
    import sys

    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", *cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(cwd / "run" / "checkpoint.pt", weights_only=True)


def test_ddp_on_gloo_equals_one_process_with_the_same_global_batch(tmp_path):
    args = ["pretrain", "--steps", "3", "--batch-size", "4", "--train-size", "16", "--probe-train", "0",
            "--workers", "0", "--device", "cpu", "--threads", "1", "--out", "run"]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    single = _run(["ecg_jepa", *args], tmp_path / "one")
    ddp = _run(["torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ecg_jepa", *args], tmp_path / "two")
    assert single["step"] == ddp["step"] == 3
    for part in ("encoder", "target_encoder", "predictor"):
        for key, value in single[part].items():
            assert torch.allclose(value, ddp[part][key], atol=2e-6, rtol=1e-5), f"{part}.{key}"
    torch.manual_seed(0)
    assert not torch.equal(single["encoder"]["W_P.weight"], JEPA("tiny").encoder.W_P.weight)  # it did train


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_run_and_log(tmp_path, precision):
    cfg = PretrainConfig(steps=2, batch_size=4, workers=0, precision=precision, checkpoint_every=1)
    pretrain(cfg, SyntheticECG(8), tmp_path, progress=False)
    rows = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert len(rows) == 2 and all(np.isfinite(r["loss"]) and r["rep_std"] > 0 and r["peak_mem_mb"] > 0 for r in rows)
    assert (tmp_path / "curves.png").exists()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["scaler"] is not None and state["step"] == 2


def test_per_sample_masks_hide_equal_counts():
    cfg = PretrainConfig(mask="random", per_sample_masks=True, batch_size=6)
    m = step_mask(cfg, 4)
    assert m.shape == (6, 50) and len(set(m.sum(1).tolist())) == 1 and not all(torch.equal(m[0], r) for r in m)
    with pytest.raises(ValueError, match="random"):
        PretrainConfig(mask="multiblock", per_sample_masks=True)
