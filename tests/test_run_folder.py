"""Pretraining runs that nothing a user does can lose: one writer per folder, no silent overwrite or
append, checkpoints from the first step and on SIGTERM, resume from a damaged checkpoint, and a run killed
at any point (SIGKILL or SIGTERM) that resumes to exactly the uninterrupted run's weights and log."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ecg_jepa import load_encoder
from ecg_jepa.data.synthetic import SyntheticECG
from ecg_jepa.errors import InputError
from ecg_jepa.train.pretrain import PretrainConfig, pretrain
from ecg_jepa.train.run_folder import RunFolder

ARGS = ["--steps", "12", "--batch-size", "4", "--train-size", "16", "--probe-train", "0", "--workers", "0",
        "--device", "cpu", "--threads", "1", "--checkpoint-every", "5", "--log-every", "2"]

# Runs the CLI, sending this process SIG when step K's EMA update starts (after its optimizer step, before
# its log and checkpoint): a deterministic kill point.
DRIVER = r"""
import os, signal, sys
import ecg_jepa.train.pretrain as loop
kill_step, sig = int(sys.argv[1]), int(sys.argv[2])
schedule = loop.ema_momentum
def hooked(step, total):
    if step == kill_step:
        os.kill(os.getpid(), sig)
    return schedule(step, total)
loop.ema_momentum = hooked
from ecg_jepa.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _cli(out: Path, *extra: str, kill: tuple[int, int] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["pretrain", *ARGS, "--out", str(out), *extra]
    cmd = [sys.executable, "-c", DRIVER, str(kill[0]), str(int(kill[1])), *args] if kill else \
        [sys.executable, "-m", "ecg_jepa", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _logged_steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in open(out / "log.jsonl")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    result = _cli(out)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out / "checkpoint.pt", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("kill_step,sig", [
    (0, signal.SIGKILL),   # before any checkpoint: the run restarts from nothing
    (3, signal.SIGKILL),   # after the first-step checkpoint, before the first step-based one (5)
    (8, signal.SIGKILL),   # after checkpoint 5, with logged steps past it
    (2, signal.SIGTERM),   # SIGTERM: the step finishes, a checkpoint is written, the run stops (143)
    (10, signal.SIGINT),
])
def test_killed_run_resumes_bit_identical(tmp_path, uninterrupted, kill_step, sig):
    out = tmp_path / "run"
    killed = _cli(out, kill=(kill_step, sig))
    assert killed.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 128 + sig), killed.stderr[-3000:]
    if sig != signal.SIGKILL:
        assert "checkpoint saved" in killed.stdout and "--resume" in killed.stdout
        assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == kill_step + 1
        assert "Traceback" not in killed.stderr
    resumed = _cli(out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    if kill_step == 0 and sig == signal.SIGKILL:
        assert "no checkpoint" in resumed.stdout and "starting fresh" in resumed.stdout
    final = torch.load(out / "checkpoint.pt", weights_only=True)
    assert final["step"] == 12
    for part in ("encoder", "target_encoder", "predictor"):
        for key, value in uninterrupted[part].items():
            assert torch.equal(value, final[part][key]), f"{part}.{key}"
    assert _logged_steps(out) == list(range(12))  # every step once: no gap, no duplicate
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["steps_this_process"] <= 12  # the run's steps, not the last process's


GROUP_DRIVER = DRIVER.replace(  # the signal to the whole group, from outside the step: it lands mid-step
    "os.kill(os.getpid(), sig)",
    "__import__('threading').Timer(0.05, os.killpg, (os.getpgid(0), sig)).start()")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_whole_process_group_checkpoints_and_resumes(tmp_path, uninterrupted, sig):
    """SIGTERM or SIGINT to the run's whole process group (training process and its loader workers, as a
    scheduler or a container stop sends it), landing mid-step: the step finishes, its checkpoint is
    written, the run exits 128 + signal with no traceback, and resuming ends where the uninterrupted run
    ends (the loader workers, signalled too, end without taking the training process down)."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["pretrain", *ARGS, "--out", str(out), "--workers", "2"]
    killed = subprocess.run([sys.executable, "-c", GROUP_DRIVER, "6", str(int(sig)), *args], capture_output=True,
                            text=True, env=env, timeout=600, start_new_session=True)
    assert killed.returncode == 128 + sig, killed.stderr[-3000:]
    assert "Traceback" not in killed.stderr and "checkpoint saved" in killed.stdout, killed.stderr[-3000:]
    assert 7 <= torch.load(out / "checkpoint.pt", weights_only=True)["step"] < 12  # the step it landed in
    resumed = _cli(out, "--resume", "--workers", "2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = torch.load(out / "checkpoint.pt", weights_only=True)
    for key, value in uninterrupted["encoder"].items():
        assert torch.equal(value, final["encoder"][key]), key
    assert _logged_steps(out) == list(range(12))


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    holder = RunFolder(tmp_path)
    holder.lock()
    try:
        result = _cli(tmp_path)
        assert result.returncode == 2
        assert f"PID {os.getpid()}" in result.stderr and "in use" in result.stderr and "Traceback" not in result.stderr
    finally:
        holder.unlock()


def test_a_refused_run_never_prints_its_start_banner(tmp_path):
    """The banner comes after the folder's checks: a refusal is the only line (it used to follow a banner
    that made the refused run look started)."""
    first = _cli(tmp_path, "--steps", "1")
    assert first.returncode == 0 and "pretraining ECG-JEPA" in first.stdout, first.stderr[-2000:]
    refused = _cli(tmp_path, "--steps", "1")
    assert refused.returncode == 2 and "--resume" in refused.stderr and "pretraining ECG-JEPA" not in refused.stdout


def test_a_folder_with_a_run_needs_resume_or_overwrite(tmp_path):
    cfg = PretrainConfig(steps=2, batch_size=2, workers=0)
    pretrain(cfg, SyntheticECG(4), tmp_path, progress=False, say=lambda *a: None)
    with pytest.raises(InputError, match="--resume.*--overwrite"):
        pretrain(cfg, SyntheticECG(4), tmp_path, progress=False, say=lambda *a: None)
    said = []
    pretrain(PretrainConfig(steps=3, batch_size=2, workers=0), SyntheticECG(4), tmp_path, overwrite=True,
             progress=False, say=said.append)
    assert any("removed the previous run" in s for s in said)
    assert _logged_steps(tmp_path) == [0, 1, 2]


def test_resume_without_a_checkpoint_says_it_starts_fresh(tmp_path):
    said = []
    pretrain(PretrainConfig(steps=1, batch_size=2, workers=0), SyntheticECG(4), tmp_path, resume=True,
             progress=False, say=said.append)
    assert any("no checkpoint" in s and "starting fresh" in s for s in said)


def _two_checkpoints(tmp_path) -> RunFolder:
    cfg = PretrainConfig(steps=4, batch_size=2, workers=0, checkpoint_every=2)
    pretrain(cfg, SyntheticECG(4), tmp_path, progress=False, say=lambda *a: None)
    folder = RunFolder(tmp_path)
    assert [torch.load(p, weights_only=True)["step"] for p in folder.checkpoints()] == [4, 2]
    return folder


@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_a_damaged_latest_checkpoint_is_named_and_the_previous_one_used(tmp_path, damage):
    folder = _two_checkpoints(tmp_path)
    latest = tmp_path / "checkpoint.pt"
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"")
    said = []
    state = folder.start(resume=True, overwrite=False, say=said.append)
    assert state["step"] == 2
    assert "checkpoint.pt" in said[0] and ("truncated" in said[0] or "empty" in said[0])
    assert "checkpoint.prev.pt (step 2)" in said[0]
    # the damaged file is moved aside: the next save keeps the good one as the fallback (it used to rotate
    # the damaged latest into checkpoint.prev.pt and delete the only readable checkpoint)
    assert (tmp_path / "checkpoint.pt.damaged").exists() and not latest.exists()
    folder.save({**state, "step": 3})
    assert [torch.load(p, weights_only=True)["step"] for p in folder.checkpoints()] == [3, 2]


def test_no_readable_checkpoint_is_one_clear_error(tmp_path):
    folder = _two_checkpoints(tmp_path)
    for path in folder.checkpoints():
        path.write_bytes(b"\x00" * 10)
    with pytest.raises(InputError, match="no readable checkpoint.*--overwrite"):
        folder.start(resume=True, overwrite=False, say=lambda *a: None)
    result = _cli(tmp_path, "--resume")
    assert result.returncode == 2 and "no readable checkpoint" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("content,match", [(b"", "empty"), (b"PK\x03\x04 cut off", "truncated|not a readable"),
                                           (b"not a checkpoint", "not a readable checkpoint")])
def test_load_encoder_explains_bad_files(tmp_path, content, match):
    path = tmp_path / "encoder.pt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=match):
        load_encoder(path)


def test_a_checkpoint_that_cannot_be_written_stops_the_run_with_one_line(tmp_path, monkeypatch, capsys):
    """A failed write (a full disk) ends the run with the reason, exit status 1; the previous checkpoint stays."""
    from ecg_jepa.cli import main

    save = RunFolder.save

    def full_disk(self, payload):
        if payload["step"] == 5:
            raise OSError(28, "No space left on device")
        save(self, payload)

    monkeypatch.setattr(RunFolder, "save", full_disk)
    assert main(["pretrain", *ARGS, "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "could not write the checkpoint of step 5" in err and "No space left" in err and "--resume" in err, err
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 1


def test_jsonl_files_skip_and_repair_a_line_cut_by_a_kill(tmp_path):
    """The one reader of our JSONL files (log, manifest, failures): a cut last line is skipped, and with repair
    removed, so the next append starts on a fresh line."""
    from ecg_jepa.jsonl import append_jsonl, read_jsonl

    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 0}\n{"step": 1')
    assert read_jsonl(path) == [{"step": 0}] and path.read_text().endswith('{"step": 1')
    assert read_jsonl(path, repair=True) == [{"step": 0}]
    append_jsonl(path, [{"step": 1}])
    assert read_jsonl(path) == [{"step": 0}, {"step": 1}] and path.read_text() == '{"step": 0}\n{"step": 1}\n'
    assert read_jsonl(tmp_path / "absent.jsonl") == []
