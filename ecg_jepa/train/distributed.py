"""torchrun / DDP plumbing: NCCL on GPUs, gloo on CPUs; rank 0 logs and writes checkpoints.

What the ranks must decide together goes through this module, on gloo groups of its own (host tensors: the
training step never waits for the GPU): :meth:`World.agree` gathers every rank's flags once per step (a
stop signal received, a data loader lost, a timed checkpoint due), :meth:`World.from_main` hands rank 0's
word (the checkpoint to resume, a failed checkpoint write) to the others. Every collective, DDP's own
included, gives up after ``timeout`` seconds; a collective that fails (a peer that stopped answering or
died) becomes a one-line :class:`~ecg_jepa.errors.RunError` naming the silent ranks and the collective
(:meth:`World.collective`). A group that torchrun restarts (``--max-restarts``) knows it
(:attr:`World.restart`), so the run resumes from its newest checkpoint by itself.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist

from ..errors import InputError, RunError

DEFAULT_TIMEOUT = 600.0  # seconds a collective waits for the slowest rank (NCCL's own default)
CHECKPOINT_WAIT = 1800.0  # seconds the other ranks wait for rank 0's checkpoint write (a vit-b one on a slow disk)
NCCL_MARGIN = 60.0  # seconds NCCL's collectives wait beyond the timeout (see init_world)


@dataclass(frozen=True)
class World:
    """This process's place: ``rank`` of ``size`` processes, on ``device``; ``timeout`` (s) bounds every
    collective; ``restart`` counts torchrun's restarts of the group (0 for the first)."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")
    timeout: float = DEFAULT_TIMEOUT
    restart: int = 0
    _control: Any = None  # gloo group of the per-step agreement (timeout ``timeout``)
    _patient: Any = None  # gloo group of the waits for rank 0 (timeout ≥ CHECKPOINT_WAIT)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def agree(self, step: int, flags: Sequence[int]) -> list[list[int]]:
        """Every rank's ``flags`` (small integers) before ``step``, one row per rank: the same on every rank."""
        if self.size == 1:
            return [list(flags)]
        mine = torch.tensor(list(flags), dtype=torch.int64)
        rows = [torch.empty_like(mine) for _ in range(self.size)]
        with self.collective(f"the ranks' agreement before step {step} (gloo all-gather)"):
            dist.all_gather(rows, mine, group=self._control)
        return [row.tolist() for row in rows]

    def from_main(self, value: Any, what: str) -> Any:
        """Rank 0's ``value`` (any picklable object) on every rank; the others wait up to
        max(timeout, CHECKPOINT_WAIT) for it."""
        if self.size == 1:
            return value
        box = [value if self.main else None]
        with self.collective(what, max(self.timeout, CHECKPOINT_WAIT)):
            dist.broadcast_object_list(box, src=0, group=self._patient)
        return box[0]

    @contextlib.contextmanager
    def collective(self, what: str, timeout: float | None = None) -> Iterator[None]:
        """Run collectives (``what`` names them in the error, ``timeout`` is theirs: ``self.timeout`` unless
        said); one that fails (a timeout, a lost peer) ends as a one-line RunError naming the ranks that did
        not answer. Other errors pass unchanged."""
        try:
            yield
        except RuntimeError as e:
            if self.size == 1 or not _is_collective_error(e):
                raise
            silent = self._silent_ranks()
            who = (f"rank {', '.join(map(str, silent))}" if silent else "another rank")
            limit = (f"collective timeout {self.timeout:g} s, --collective-timeout" if timeout is None else
                     f"waited up to {timeout:g} s: the longer of --collective-timeout and {CHECKPOINT_WAIT:g} s")
            raise RunError(f"{who} stopped answering: {what} failed on rank {self.rank} ({_first_line(e)}; {limit}); "
                           "the newest checkpoint is intact: rerun with --resume") from None

    def _silent_ranks(self) -> list[int]:
        """The ranks that did not report a failed collective themselves within a few seconds (the others'
        timeouts end about when ours did); [] when the rendezvous store cannot tell."""
        prefix = "ecg-jepa/failed/"
        try:
            store = dist.distributed_c10d._get_default_store()
            store.set(prefix + str(self.rank), "1")
            deadline = time.monotonic() + min(5.0, self.timeout / 4)
            while True:
                silent = [r for r in range(self.size) if r != self.rank and not store.check([prefix + str(r)])]
                if not silent or time.monotonic() > deadline:
                    return silent
                time.sleep(0.1)
        except Exception:  # the store went down with its host: the message cannot name the rank
            return []


def _is_collective_error(e: RuntimeError) -> bool:
    """A failed collective: torch's distributed errors (NCCL) or gloo's plain RuntimeErrors."""
    return isinstance(e, dist.DistError) or "gloo" in str(e).lower()


def _first_line(e: BaseException) -> str:
    """The error's first sentence without gloo's source-file prefix ("[.../pair.cc:545] ")."""
    line = re.sub(r"^\[[^\]]*\] ", "", str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    return re.split(r"(?<=\.) ", line)[0][:200]  # gloo's advice after the first sentence is not the error


def init_world(device: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> World:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1), or run alone. ``timeout`` (s) bounds
    every collective."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if device not in (None, "cpu", "cuda"):
        raise InputError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    if not timeout > 0:
        raise InputError(f"the collective timeout must be positive, got {timeout}")
    want_cuda = device == "cuda" or (device is None and torch.cuda.is_available())
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if size == 1:
        return World(0, 1, torch.device("cuda" if want_cuda else "cpu"), timeout, restart)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        torch.cuda.set_device(local)
    wait = datetime.timedelta(seconds=timeout)
    if not dist.is_initialized():
        # NCCL's watchdog aborts the process with its own report when a collective times out; it waits a minute
        # longer than the gloo agreement, which names the silent rank in one line when the host gets there.
        nccl_wait = datetime.timedelta(seconds=timeout + NCCL_MARGIN)
        dist.init_process_group(backend="nccl" if want_cuda else "gloo", timeout=nccl_wait if want_cuda else wait,
                                **_rendezvous(restart, datetime.timedelta(seconds=max(timeout, DEFAULT_TIMEOUT))))
    control = dist.new_group(backend="gloo", timeout=wait)
    patient = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=max(timeout, CHECKPOINT_WAIT)))
    return World(dist.get_rank(), dist.get_world_size(), torch.device("cuda", local) if want_cuda else torch.device("cpu"),
                 timeout, restart, control, patient)


def _rendezvous(restart: int, wait: datetime.timedelta) -> dict:
    """``init_process_group``'s store for a group torchrun may restart: torchrun's own store keeps the keys of
    the attempt before (the ranks' addresses), which a restarted group would read and fail to connect to
    (pytorch/pytorch#135712), so each attempt gets keys of its own. {} (the env:// default) elsewhere.
    ``wait``: how long the ranks may take to start (not the collective timeout: ranks start seconds apart)."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return {}
    size = int(os.environ["WORLD_SIZE"])
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), size, is_master=False,
                          timeout=wait)
    return {"store": dist.PrefixStore(f"/ecg-jepa/attempt_{restart}", store), "rank": int(os.environ["RANK"]),
            "world_size": size}


def close_world(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
