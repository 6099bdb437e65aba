"""``ecg-jepa bench``: every benchmark of the suite in one run, one table, result files with the
machine, versions and commit. Parity first: a backend that fails it is reported and never timed."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from . import bench_block, bench_cropa, bench_data, bench_patch_embed, bench_train_step
from .report import add_ratios, table, write
from .timing import ceilings, machine


def run(quick: bool = False, device: str | None = None, out: str | Path = "runs/bench",
        budget: float | None = None) -> tuple[str, Path]:
    """Run the suite on ``device`` (default: the GPU when there is one); write
    ``bench-<device>-<time>.{json,csv,md,png}`` under ``out``; return the Markdown and the files' stem."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    kind = "quick" if quick else ("gpu" if dev.type == "cuda" else "cpu")
    budget = budget if budget is not None else (0.05 if quick else 1.0)
    dtypes = [torch.bfloat16, torch.float16] if dev.type == "cuda" else [torch.float32]
    rows = []
    for i, shape in enumerate(bench_cropa.SHAPES[kind]):
        for dtype in dtypes if i == 0 else dtypes[:1]:
            rows += bench_cropa.rows(shape, dtype, dev, budget)
    if dev.type == "cuda":
        rows += bench_patch_embed.rows(4 if quick else 64, 64 if quick else 768, torch.bfloat16, dev, budget)
        rows += bench_block.rows("tiny" if quick else "vit-b", 4 if quick else 64, dev, torch.bfloat16, budget)
        rows += bench_train_step.rows("tiny" if quick else "vit-b", 4 if quick else 64, dev, torch.bfloat16, budget)
    else:
        rows += bench_patch_embed.rows(4 if quick else 64, 64 if quick else 768, torch.float32, dev, budget)
        rows += bench_block.rows("tiny", 4 if quick else 32, dev, torch.float32, budget)
        rows += bench_train_step.rows("tiny", 4 if quick else 32, dev, torch.float32, budget)
    rows += bench_data.rows(16 if quick else 512, 512 if quick else 8192, workers=2)
    add_ratios(rows)
    ceil = ceilings(dev)
    info = {**machine(dev), "ceilings": ceil, "kind": kind, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    header = (f"{info['device']} ({info.get('cpu_threads')} threads), torch {info['torch']}, triton {info['triton']}, "
              f"commit {info['commit']}" + (f", ceilings {ceil}" if ceil else ""))
    md = f"{header}\n\n{table(rows, ceil)}\n"
    stem = Path(out) / f"bench-{dev.type}{'-quick' if quick else ''}-{time.strftime('%Y%m%d-%H%M%S')}"
    write(stem, rows, info, md)
    return md, stem
