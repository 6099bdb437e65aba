"""Multi-process pretraining survives what clusters do to it (2 gloo processes under torchrun, on the CPU):
pre-emption of the launcher or of every process of the job, in any order; a rank killed outright with
``--max-restarts``; a rank that stops answering; a checkpoint write that is slow or fails on rank 0."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

ARGS = ["pretrain", "--steps", "40", "--batch-size", "8", "--train-size", "64", "--probe-train", "0", "--workers", "1",
        "--device", "cpu", "--threads", "1", "--checkpoint-every", "10", "--log-every", "2", "--out", "run"]

# Each rank runs the CLI and leaves its exit status in rc-RANK-RESTART. ECG_JEPA_TEST_SAVES="slow:S,fail:F"
# makes rank 0's checkpoint write of step S take longer than the collective timeout, and that of step F fail.
DRIVER = r"""
import os, sys, time
from ecg_jepa.train import run_folder
plan = dict(item.split(":") for item in filter(None, os.environ.get("ECG_JEPA_TEST_SAVES", "").split(",")))
save = run_folder.RunFolder.save
def hooked(self, payload):
    if payload["step"] == int(plan.get("slow", -1)):
        time.sleep(float(os.environ["ECG_JEPA_TEST_SLOW_S"]))
    if payload["step"] == int(plan.get("fail", -1)):
        raise OSError(28, "No space left on device")
    return save(self, payload)
run_folder.RunFolder.save = hooked
from ecg_jepa.cli import main
rc = main(sys.argv[1:])
open(f"rc-{os.environ['RANK']}-{os.environ['TORCHELASTIC_RESTART_COUNT']}", "w").write(str(rc))
sys.exit(rc)
"""


def _start(cwd: Path, *extra: str, torchrun: tuple[str, ...] = (), env: dict | None = None) -> subprocess.Popen:
    (cwd / "driver.py").write_text(DRIVER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *torchrun,
           "--log-dir", "logs", "--redirects", "3", "driver.py", *ARGS, *extra]
    return subprocess.Popen(cmd, cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def _rank_output(cwd: Path, rank: int, attempt: int = 0) -> tuple[str, str]:
    """(stdout, stderr) of a rank in an attempt, from torchrun's --log-dir."""
    [folder] = cwd.glob(f"logs/*/attempt_{attempt}/{rank}")
    return tuple((folder / f"{name}.log").read_text().replace("\r", "\n") for name in ("stdout", "stderr"))


def _rc(cwd: Path, rank: int, attempt: int = 0) -> int | None:
    path = cwd / f"rc-{rank}-{attempt}"
    return int(path.read_text()) if path.exists() else None


def _logged(cwd: Path) -> list[int]:
    path = cwd / "run" / "log.jsonl"
    return [json.loads(line)["step"] for line in open(path)] if path.exists() else []


def _wait_for_step(cwd: Path, proc: subprocess.Popen, step: int) -> None:
    while len(_logged(cwd)) < step:
        assert proc.poll() is None, _finish(proc)[-3000:]
        time.sleep(0.05)


def _processes(root: int) -> list[int]:
    """``root`` and every process below it (the launcher, the ranks, their loader workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _ranks(proc: subprocess.Popen) -> list[int]:
    """The rank processes (the launcher's children), by rank: torchrun starts them in rank order."""
    while True:
        kids = [p for p in _processes(proc.pid) if Path(f"/proc/{p}/stat").exists()
                and int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1]) == proc.pid]
        if len(kids) == 2:
            return sorted(kids)
        time.sleep(0.05)


def _assert_same_weights(a: dict, b: dict) -> None:
    for part in ("encoder", "target_encoder", "predictor"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), f"{part}.{key}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    cwd = tmp_path_factory.mktemp("uninterrupted")
    out = _finish(_start(cwd))
    assert _rc(cwd, 0) == _rc(cwd, 1) == 0, out[-3000:]
    return torch.load(cwd / "run" / "checkpoint.pt", weights_only=True)


@pytest.mark.parametrize("target", ["launcher", "every process"])
def test_sigterm_stops_every_rank_after_the_same_step_and_resumes_bit_identical(tmp_path, uninterrupted, target):
    """SIGTERM to the launcher (torchrun passes it to the ranks), or to every process of the job in a random
    order (launcher, ranks, loader workers: a scheduler's pre-emption): every rank exits 128 + 15 with one
    line and no traceback, the checkpoint holds the last step every rank completed, nothing logged past
    it, and ``--resume`` ends bit-identical to the uninterrupted run with each step logged once."""
    at = random.randint(2, 30)
    proc = _start(tmp_path)
    _wait_for_step(tmp_path, proc, at)
    if target == "launcher":
        proc.send_signal(signal.SIGTERM)
    else:
        pids = _processes(proc.pid)
        random.shuffle(pids)
        _signal_all(pids, signal.SIGTERM)
    out = _finish(proc)
    for rank in (0, 1):
        stdout, stderr = _rank_output(tmp_path, rank)
        assert _rc(tmp_path, rank) == 128 + signal.SIGTERM, f"signal at step {at}: {stderr[-3000:]}{out[-2000:]}"
        assert "Traceback" not in stderr, stderr[-3000:]
        assert f"(rank {rank}): stopped by SIGTERM" in stdout and "--resume" in stdout
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"]
    assert at <= saved < 40 and _logged(tmp_path) == list(range(saved)), f"signal at step {at}"
    out = _finish(_start(tmp_path, "--resume"))
    assert _rc(tmp_path, 0) == _rc(tmp_path, 1) == 0, out[-3000:]
    _assert_same_weights(uninterrupted, torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True))
    assert _logged(tmp_path) == list(range(40))


def test_a_rank_killed_outright_is_restarted_and_the_run_resumes_by_itself(tmp_path, uninterrupted):
    """SIGKILL of rank 1 with ``--max-restarts=1``: torchrun restarts the group, which resumes from the
    newest checkpoint without being told, says from which step, and ends with the uninterrupted weights."""
    proc = _start(tmp_path, torchrun=("--max-restarts=1",))
    rank1 = _ranks(proc)[1]
    _wait_for_step(tmp_path, proc, random.randint(12, 30))
    os.kill(rank1, signal.SIGKILL)
    out = _finish(proc)
    assert proc.returncode == 0 and _rc(tmp_path, 0, 1) == _rc(tmp_path, 1, 1) == 0, out[-3000:]
    stdout, _ = _rank_output(tmp_path, 0, attempt=1)
    assert "torchrun restarted the group (restart 1)" in stdout and "resuming at step" in stdout, stdout
    _assert_same_weights(uninterrupted, torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True))
    assert _logged(tmp_path) == list(range(40))


def test_a_rank_that_stops_answering_is_named_within_the_timeout(tmp_path):
    """SIGSTOP of rank 1: rank 0 stops within the collective timeout (plus a few seconds to learn which rank
    was silent) with a one-line error naming rank 1 and the collective; the checkpoint stays readable."""
    proc = _start(tmp_path, "--collective-timeout", "4", "--steps", "400")
    rank1 = _ranks(proc)[1]
    try:
        _wait_for_step(tmp_path, proc, 6)
        os.kill(rank1, signal.SIGSTOP)
        stopped = time.monotonic()
        while _rc(tmp_path, 0) is None and time.monotonic() - stopped < 60:
            time.sleep(0.1)
        waited = time.monotonic() - stopped
    finally:
        _signal_all(_processes(proc.pid), signal.SIGKILL)
        proc.communicate()
    _, stderr = _rank_output(tmp_path, 0)
    assert _rc(tmp_path, 0) == 1 and waited < 4 + 10, (waited, stderr[-3000:])
    assert "Traceback" not in stderr
    [line] = [line for line in stderr.splitlines() if "error:" in line]
    assert "rank 1 stopped answering" in line and "--collective-timeout" in line, line
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] >= 1


def test_the_ranks_wait_for_a_slow_checkpoint_and_all_stop_on_a_failed_one(tmp_path):
    """Rank 0's first checkpoint takes longer than the collective timeout: the other rank waits for it. Its
    write of step 20 fails: every rank stops with the reason in one line, exit status 1, and the checkpoint
    of step 10 stays the newest."""
    proc = _start(tmp_path, "--collective-timeout", "2", env={"ECG_JEPA_TEST_SAVES": "slow:1,fail:20",
                                                               "ECG_JEPA_TEST_SLOW_S": "4"})
    out = _finish(proc)
    for rank in (0, 1):
        _, stderr = _rank_output(tmp_path, rank)
        assert _rc(tmp_path, rank) == 1, stderr[-3000:] + out[-2000:]
        assert "Traceback" not in stderr
        [line] = [line for line in stderr.splitlines() if "error:" in line]
        assert "rank 0 could not write the checkpoint of step 20" in line and "No space left" in line, line
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 10
