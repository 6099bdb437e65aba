"""A pretraining run's folder, protected: one writer at a time, no run silently overwritten or appended
to, checkpoints that survive being killed at any moment.

Layout: ``checkpoint.pt`` (the latest) and ``checkpoint.prev.pt`` (the one before, kept until a newer one
is complete), ``log.jsonl`` (one line per step), ``curves.png``, ``encoder.pt``, and ``.lock`` (held while a
run writes; it names the holder's PID).
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

import torch

from ..atomic import atomic_write, load_torch
from ..errors import InputError
from ..jsonl import append_jsonl, read_jsonl, write_jsonl

LATEST, PREVIOUS, LOG, LOCK = "checkpoint.pt", "checkpoint.prev.pt", "log.jsonl", ".lock"
NEW = ".checkpoint.new"  # complete, not yet renamed to LATEST (a kill between the two renames of a save)
DAMAGED = ".damaged"  # suffix of an unreadable checkpoint moved aside by a resume
OUTPUTS = (NEW, LATEST, PREVIOUS, LOG, "curves.png", "encoder.pt", *(name + DAMAGED for name in (NEW, LATEST, PREVIOUS)))


class RunFolder:
    """``out``, opened for one run: :meth:`lock` it, then :meth:`start` (fresh, resumed or overwritten)."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.path = Path(out)
        self.resumed_from: Path | None = None  # the checkpoint :meth:`start` resumed from
        self._lock_file = None

    # -- one writer at a time -------------------------------------------------------------------------
    def lock(self) -> None:
        """Hold ``.lock`` (an exclusive ``flock``, released when the process ends, even by SIGKILL)."""
        self.path.mkdir(parents=True, exist_ok=True)
        f = open(self.path / LOCK, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise InputError(f"{self.path} is in use by a running pretrain ({holder}); wait for it to end or "
                             "pass another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"PID {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        self._lock_file = f

    def unlock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    # -- fresh, resumed or overwritten -----------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """The checkpoints present, newest first."""
        return [p for p in (self.path / NEW, self.path / LATEST, self.path / PREVIOUS) if p.exists()]

    def start(self, resume: bool, overwrite: bool, say=print) -> dict | None:
        """Decide how the run starts; return the checkpoint state to resume from, or None to start fresh.

        A folder holding a checkpoint needs ``resume`` (continue it) or ``overwrite`` (delete the old
        run's files first); ``resume`` without a checkpoint starts fresh and says so.
        """
        if resume and overwrite:
            raise InputError("--resume and --overwrite contradict each other: choose one")
        found = self.checkpoints()
        if overwrite:
            for name in OUTPUTS:
                (self.path / name).unlink(missing_ok=True)
            if found:
                say(f"--overwrite: removed the previous run's checkpoints, log and curves in {self.path}")
            return None
        if not resume:
            if found:
                raise InputError(f"{self.path} holds a run (checkpoint at step {_step_of(found[0])}); pass --resume "
                                 "to continue it or --overwrite to start afresh there")
            (self.path / LOG).unlink(missing_ok=True)  # a log without a checkpoint: a run killed before its first step
            return None
        if not found:
            say(f"--resume: no checkpoint in {self.path}, starting fresh")
            (self.path / LOG).unlink(missing_ok=True)
            return None
        return self._read_latest(say)

    def _read_latest(self, say) -> dict:
        """The newest readable checkpoint; a damaged newer one is named, moved aside (``<name>.damaged``, so
        the next save can never rotate it into the fallback) and the previous one used."""
        problems, damaged = [], []
        for path in self.checkpoints():
            try:
                state = load_torch(path, "pretraining checkpoint")
            except InputError as e:
                problems.append(str(e))
                damaged.append(path)
                continue
            for bad in damaged:
                bad.replace(bad.with_name(bad.name + DAMAGED))
            self.resumed_from = path
            if problems:
                moved = ", ".join(p.name + DAMAGED for p in damaged)
                say(f"warning: {problems[0]}; resuming from {path.name} (step {state.get('step')}) instead "
                    f"(kept as {moved})")
            return state
        raise InputError("no readable checkpoint to resume from: " + "; ".join(problems)
                         + " (pass --overwrite to start afresh)")

    # -- checkpoints and the log -----------------------------------------------------------------------
    def save(self, payload: dict) -> None:
        """Write the new checkpoint in full beside the old, then make it the latest and the old one the
        previous: a kill at any moment leaves at least one complete checkpoint."""
        tmp = atomic_write(self.path / NEW, lambda p: torch.save(payload, p))
        if (self.path / LATEST).exists():
            os.replace(self.path / LATEST, self.path / PREVIOUS)
        os.replace(tmp, self.path / LATEST)

    def truncate_log(self, step: int) -> None:
        """Keep the log's lines of steps before ``step`` (the resumed checkpoint's): no step twice."""
        log = self.path / LOG
        if log.exists():
            write_jsonl(log, [row for row in read_jsonl(log) if row.get("step", step) < step])

    def append_log(self, rows: list[dict]) -> None:
        append_jsonl(self.path / LOG, rows)

    def logged_steps(self) -> list[int]:
        """The steps in the log (a line cut off by a kill is skipped)."""
        return [row["step"] for row in read_jsonl(self.path / LOG) if "step" in row]


def _step_of(path: Path) -> str:
    try:
        return str(load_torch(path, "pretraining checkpoint").get("step", "?"))
    except InputError:
        return "? (unreadable)"
