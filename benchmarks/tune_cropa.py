"""Sweep the Triton CroPA kernels' launch configurations on a GPU: ``python -m ecg_jepa.benchmarks.tune_cropa``.

For each shape of the speed goals, every configuration near the default (leads per program, warps, slot
tiles) is checked for parity against the float64 oracle on one sample, forward and gradients, by the
benchmark's shared check (:func:`.verdict.judge`); one that fails (or crashes) is reported and not timed; the
others are timed (forward alone, backward alone) with
``triton.testing.do_bench``. Prints a table and writes JSON; the defaults in
``ecg_jepa.ops.cropa.triton.config`` are meant to follow what this measures. (The prefetching column loops
and the gathered-column forward were swept on an H100 and an H200 and lost: deleted.)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from ecg_jepa.ops.cropa import triton as launch
from ecg_jepa.ops.cropa.testing import parity

from .bench_cropa import SHAPES, AttnShape
from .timing import machine, time_call
from .verdict import judge


def _tensors(shape: AttnShape, dtype: torch.dtype, device: torch.device):
    qkv = torch.randn(shape.b, shape.n, 3, shape.h, shape.d, device=device, dtype=dtype)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # as CroPAAttention lays them out
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty(shape.b, shape.h, shape.n, device=device)
    return q, k, v, out, lse


def candidates(base: launch.Config, n_leads: int) -> list[launch.Config]:
    """The default and its neighbours: leads per program L or 1; 4 or 8 warps; the other slot tiles."""
    groups = sorted({n_leads, 1}, reverse=True)  # L/2 and 2 measured between the two (H100, 2026-11-26)
    out = [base]
    for g in groups:
        for warps in (4, 8):
            for tile in {base.block_t, max(16, base.block_t // 2)}:
                cfg = dataclasses.replace(base, leads_per_program=g, num_warps=warps, block_t=tile)
                if cfg not in out:
                    out.append(cfg)
    for warps in (4, 8):
        for tile in {base.bwd_block_t, max(16, base.bwd_block_t // 2), min(64, base.bwd_block_t * 2)}:
            cfg = dataclasses.replace(base, bwd_num_warps=warps, bwd_block_t=tile)
            if cfg not in out:
                out.append(cfg)
    return out


def _kernels(cfg: launch.Config):
    """The forward and backward launches of ``cfg`` as a parity callable (``testing.parity``)."""

    def run(q, k, v, n_leads, grad_out):
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
        lse = torch.empty(q.shape[:-1], device=q.device)
        kernel, grid, args, kwargs = launch.fwd_launch(q, k, v, out, lse, n_leads, q.shape[-1] ** -0.5, cfg)
        kernel[grid](*args, **kwargs)
        grads = [torch.empty_like(out) for _ in range(3)]
        kernel, grid, args, kwargs = launch.bwd_launch(grad_out.to(out), q, k, v, out, lse, torch.empty_like(lse),
                                                       *grads, n_leads, q.shape[-1] ** -0.5, cfg)
        kernel[grid](*args, **kwargs)
        return out.cpu(), tuple(x.cpu() for x in grads)

    return run


def measure(shape: AttnShape, dtype: torch.dtype, cfg: launch.Config, budget: float,
            device: torch.device | str = "cuda") -> dict:
    """Parity (forward and gradients, one sample), then, if it holds, the forward's and backward's times
    (``device``: a GPU; the CPU runs the kernels in Triton's interpreter, for tests)."""
    device = torch.device(device)
    q, k, v, out, lse = _tensors(shape, dtype, device)
    g = torch.randn_like(out)
    verdict, ok = judge(lambda: parity(_kernels(cfg), q[:1], k[:1], v[:1], shape.leads, g[:1]))
    row = {"config": dataclasses.asdict(cfg), "fwd_ms": None, "bwd_ms": None, "parity": verdict}
    if not ok:
        return row
    scale = shape.d ** -0.5
    kernel, grid, args, kwargs = launch.fwd_launch(q, k, v, out, lse, shape.leads, scale, cfg)
    row["fwd_ms"] = time_call(lambda: kernel[grid](*args, **kwargs), q.device, budget).median
    grads = [torch.empty_like(out) for _ in range(3)]
    kernel, grid, args, kwargs = launch.bwd_launch(g, q, k, v, out, lse, torch.empty_like(lse), *grads,
                                                   shape.leads, scale, cfg)
    row["bwd_ms"] = time_call(lambda: kernel[grid](*args, **kwargs), q.device, budget).median
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ecg_jepa.benchmarks.tune_cropa", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="goal", choices=sorted(SHAPES))
    parser.add_argument("--budget", type=float, default=0.2, help="seconds of timing per configuration and pass")
    parser.add_argument("--json", default="runs/bench/tune-cropa.json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("tune_cropa needs a GPU")
    results = []
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = {"machine": machine(torch.device("cuda")), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for shape in SHAPES[args.shapes]:
        base = launch.config(shape.leads, shape.slots, shape.d, torch.bfloat16)
        for cfg in candidates(base, shape.leads):
            row = {"shape": str(shape), "default": cfg == base, **measure(shape, torch.bfloat16, cfg, args.budget)}
            results.append(row)
            c = row["config"]
            times = (f"fwd {row['fwd_ms']:.4f} ms  bwd {row['bwd_ms']:.4f} ms" if row["fwd_ms"] is not None
                     else "not timed")
            print(f"{row['shape']:<28} G={c['leads_per_program']} warps={c['num_warps']}/{c['bwd_num_warps']} "
                  f"tile={c['block_t']}/{c['bwd_block_t']}{' (default)' if row['default'] else '':<10} "
                  f"{times}  parity {row['parity']}", flush=True)
            out.write_text(json.dumps({**info, "rows": results}, indent=1))  # after each row: a sweep cut short keeps it
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
