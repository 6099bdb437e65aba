"""Timing, device ceilings and provenance shared by every benchmark.

CPU: wall-clock over repeated calls (median with p20/p80). CUDA: ``triton.testing.do_bench`` (CUDA
events, the L2 cache flushed before every call), median with p20/p80. Ceilings are measured in the same
run: device copy bandwidth and a large bf16 matmul.
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


def time_call(fn: Callable[[], object], device: torch.device, budget_s: float = 1.0, min_reps: int = 5,
              max_reps: int = 200, warmup: int = 2) -> Timing:
    """Time ``fn()``: on CUDA with ``triton.testing.do_bench`` (``budget_s`` of repetitions), on the CPU by
    the wall clock until ``budget_s`` is spent (at least ``min_reps`` calls)."""
    if device.type == "cuda":
        import triton.testing

        ms = max(25, int(budget_s * 1e3))
        med, p20, p80 = triton.testing.do_bench(fn, warmup=max(10, ms // 4), rep=ms, quantiles=[0.5, 0.2, 0.8])
        return Timing(med, p20, p80, -1)
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < min_reps or (time.perf_counter() - start < budget_s and len(samples) < max_reps):
        tic = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - tic) * 1e3)
    return _quantiles(samples)


def ceilings(device: torch.device) -> dict:
    """Measured device ceilings: copy bandwidth (GB/s, bytes read + written) and bf16 matmul (TFLOP/s)."""
    if device.type != "cuda":
        return {}
    x = torch.empty(256 * 2**20, dtype=torch.float32, device=device).normal_()  # 1 GiB
    y = torch.empty_like(x)
    copy = time_call(lambda: y.copy_(x), device, 1.0)
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    mm = time_call(lambda: a @ a, device, 1.0)
    return {"copy_GBps": 2 * 256 * 2**20 * 4 / copy.median / 1e6, "bf16_TFLOPs": 2 * 8192**3 / mm.median / 1e9}


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
