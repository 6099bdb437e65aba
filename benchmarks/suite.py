"""``ecg-jepa bench``: every benchmark of the suite in one run, one table, result files with the
machine, versions and commit. Parity first (:mod:`.verdict`): a row that fails it is reported and never timed."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from . import bench_block, bench_cropa, bench_data, bench_patch_embed, bench_train_step
from .report import LEGEND, Row, add_ratios, progress_line, table, write
from .timing import ceilings, machine

PARTS = ("attention", "patch-embed", "block", "train-step", "data")


def run(quick: bool = False, device: str | None = None, out: str | Path = "runs/bench",
        budget: float | None = None, parts: tuple[str, ...] = PARTS, shapes: str | None = None,
        impls: tuple[str, ...] | None = None, say=print) -> tuple[str, Path]:
    """Run the suite on ``device`` (default: the GPU when there is one); write
    ``bench-<device>-<time>.{json,csv,md,png}`` under ``out``; return the Markdown and the files' stem.

    parts: which benchmarks (:data:`PARTS`); shapes: the attention shape set (``bench_cropa.SHAPES``: quick,
    cpu, gpu, goal; default by device); impls: only these attention backends (and ``dense``; the training
    step: ``auto`` and these, eager); say: where
    each row goes as it is measured (one line each).
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    kind = "quick" if quick else ("gpu" if dev.type == "cuda" else "cpu")
    budget = budget if budget is not None else (0.05 if quick else 1.0)
    gpu = dev.type == "cuda"
    dtype = torch.bfloat16 if gpu else torch.float32
    ceil = ceilings(dev)
    rows: list[Row] = []

    def add(new: list[Row]) -> None:  # each row is printed as it is measured: a run cut short still shows them
        rows.extend(new)
        for r in new:
            say(progress_line(r, ceil))

    if "attention" in parts:
        for i, shape in enumerate(bench_cropa.SHAPES[shapes or kind]):
            for dt in ([torch.bfloat16, torch.float16] if gpu and i == 0 else [dtype]):
                add(bench_cropa.rows(shape, dt, dev, budget, impls))
    if "patch-embed" in parts:
        add(bench_patch_embed.rows(4 if quick else 64, 64 if quick else 768, dtype, dev, budget))
    preset, batch = ("tiny", 4) if quick else (("vit-b", 64) if gpu else ("tiny", 32))
    if "block" in parts:
        add(bench_block.rows(preset, batch, dev, dtype, budget))
    if "train-step" in parts:  # compiled and triton variants on a GPU only (minutes on a CPU)
        variants = bench_train_step.VARIANTS if gpu else (("auto", False), ("reference", False))
        if impls:  # auto beside the named attention backends, eager
            variants = (("auto", False), *((i, False) for i in impls if i in bench_cropa.BACKENDS))
        add(bench_train_step.rows(preset, batch, dev, dtype, budget, variants))
    if "data" in parts:
        add(bench_data.rows(16 if quick else 512, 512 if quick else 8192, workers=2))
    add_ratios(rows)
    info = {**machine(dev), "ceilings": ceil, "kind": kind, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    header = (f"{info['device']} ({info.get('cpu_threads')} threads), torch {info['torch']}, triton {info['triton']}, "
              f"commit {info['commit']}" + (f", ceilings {ceil}" if ceil else ""))
    md = f"{header}\n\n{table(rows, ceil)}\n\n{LEGEND}\n"
    stem = Path(out) / f"bench-{dev.type}{'-quick' if quick else ''}-{time.strftime('%Y%m%d-%H%M%S')}"
    write(stem, rows, info, md)
    return md, stem
