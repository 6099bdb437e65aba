"""Timing and provenance helpers shared by ``ecg-jepa bench`` and ``benchmarks/``.

CPU: wall-clock over repeated calls (median with p20/p80). CUDA: CUDA events around each call, inputs
rotated among several copies so the L2 cache does not flatter, never zeros.
"""
from __future__ import annotations

import platform
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch


@dataclass
class Timing:
    """Milliseconds per call: median and the 20th / 80th percentiles over ``reps`` calls."""

    median: float
    p20: float
    p80: float
    reps: int


def _quantiles(samples: list[float]) -> Timing:
    samples = sorted(samples)
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]  # noqa: E731
    return Timing(statistics.median(samples), pick(0.2), pick(0.8), len(samples))


def time_call(fn: Callable[[int], object], device: torch.device, budget_s: float = 1.0, min_reps: int = 5,
              max_reps: int = 200, warmup: int = 2) -> Timing:
    """Time ``fn(i)`` (i: the call's index, for rotating inputs) until ``budget_s`` is spent."""
    for i in range(warmup):
        fn(i)
    samples: list[float] = []
    start = time.perf_counter()
    cuda = device.type == "cuda"
    while len(samples) < min_reps or (time.perf_counter() - start < budget_s and len(samples) < max_reps):
        i = len(samples)
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn(i)
            end.record()
            end.synchronize()
            samples.append(begin.elapsed_time(end))
        else:
            tic = time.perf_counter()
            fn(i)
            samples.append((time.perf_counter() - tic) * 1e3)
    return _quantiles(samples)


def git_commit(path: Path | None = None) -> str:
    """The checkout's commit (with '+dirty' if it has uncommitted changes), or 'unknown'."""
    cwd = path or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine(device: torch.device) -> dict:
    """Device, driver and library versions, and the commit: stored beside every result."""
    info = {
        "device": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "commit": git_commit(),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device=props.name, cuda=torch.version.cuda, sm=f"{props.major}.{props.minor}",
                    driver=_nvidia_driver())
    else:
        info["device"] = _cpu_name()
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return None
