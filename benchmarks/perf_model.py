"""A performance model of the Triton CroPA kernels: ``python -m ecg_jepa.benchmarks.perf_model [--md FILE]``.

For each shape of the speed goals it counts, per kernel, the minimal HBM bytes (each input read once, each
output written once), the bytes the design actually loads (re-reads counted: they come from L1/L2), the
tensor-core FLOPs it issues (padded tiles counted), the CUDA-core FLOPs of its column part, and the
programs and CTAs per SM (from the offline kernel report), then predicts the time from ceilings measured
on an H100 (copy 3,000 GB/s, bf16 matmul 687 TFLOP/s; L1 and fp32 rates from the chip's datasheet
figures). Two predictions bracket it: every resource overlapping perfectly (the maximum of the per-resource
times) and half of the non-dominant time exposed. Nothing here needs a GPU.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .bench_cropa import SHAPES, AttnShape

HBM_GBPS = 3000.0  # measured device copy on the H100 (shared/gpu/h100-2026-11-26.md)
TC_TFLOPS = 687.0  # measured bf16 8192^3 matmul
SMS = 132
CLOCK_GHZ = 1.755
L1_GBPS = SMS * 128 * CLOCK_GHZ  # 128 B/clk/SM of L1 load bandwidth ≈ 29.7 TB/s
FP32_TFLOPS = SMS * 128 * 2 * CLOCK_GHZ / 1e3  # 128 FP32 lanes/SM, an FMA = 2 FLOPs ≈ 59 TFLOP/s
LAUNCH_US = 4.0  # a kernel launch and its tail, roughly

TARGETS_FWD_BWD_MS = {"B64 H16 L8xT50=N400 d48": 0.22, "B64 H16 L8xT23=N184 d48": 0.11,
                      "B128 H16 L8xT17=N136 d48": 0.12, "B64 H16 L12xT50=N600 d48": 0.36}
TODAY_MS = {"B64 H16 L8xT50=N400 d48": (0.257, 1.605), "B64 H16 L8xT23=N184 d48": (0.126, 0.895),
            "B128 H16 L8xT17=N136 d48": (0.231, 1.104), "B64 H16 L12xT50=N600 d48": (0.510, 3.028)}
SDPA_FWD_BWD_MS = {"B64 H16 L8xT50=N400 d48": 1.115, "B64 H16 L8xT23=N184 d48": 0.539,
                   "B128 H16 L8xT17=N136 d48": 0.600, "B64 H16 L12xT50=N600 d48": 1.816}


@dataclass
class Estimate:
    kernel: str
    hbm_min_mb: float
    loaded_mb: float
    tc_gflop: float
    fp32_gflop: float
    programs: int
    ctas_per_sm: int

    @property
    def times_us(self) -> dict:
        return {"hbm": self.hbm_min_mb / HBM_GBPS * 1e3, "l1": self.loaded_mb / L1_GBPS * 1e3,
                "tensor": self.tc_gflop / TC_TFLOPS * 1e3, "fp32": self.fp32_gflop / FP32_TFLOPS * 1e3}

    @property
    def waves(self) -> float:
        return self.programs / (SMS * max(1, self.ctas_per_sm))

    def predict_us(self) -> tuple[float, float]:
        """(perfect overlap, half of the rest exposed), with the last wave's imbalance and a launch."""
        t = self.times_us
        tail = math.ceil(self.waves) / self.waves if self.waves >= 1 else 1 / self.waves
        low = max(t.values()) * min(tail, 1.5) + LAUNCH_US
        high = (max(t.values()) + 0.5 * (sum(t.values()) - max(t.values()))) * min(tail, 1.5) + LAUNCH_US
        return low, high


def estimates(shape: AttnShape, ctas: dict[str, int]) -> list[Estimate]:
    from ecg_jepa.ops.cropa.triton import config

    cfg = config(shape.leads, shape.slots, shape.d, torch.bfloat16)
    bh, n, d, el = shape.b * shape.h, shape.n, shape.d, 2
    big = 1e6
    out = []
    # Forward: one program per (batch, head).
    nb = math.ceil(shape.slots / cfg.block_t)
    tp = nb * cfg.block_t
    loads = n * d * (1 + 2 * nb + 2 * (shape.leads - 1))  # q; the lead's K, V per slot block; column K_m, V_m
    out.append(Estimate(
        "cropa_fwd_kernel", bh * (4 * n * d * el + 4 * n) / big, bh * loads * el / big,
        bh * shape.leads * nb * nb * 4 * cfg.block_t ** 2 * cfg.block_d / 1e9,
        bh * shape.leads * (shape.leads - 1) * tp * cfg.block_d * 4 / 1e9,  # QK and PV, 2 FLOPs per element each
        bh, ctas["fwd"]))
    nb = math.ceil(shape.slots / cfg.bwd_block_t)
    tp = nb * cfg.bwd_block_t
    loads = n * d * (2 + 4 + 4 * nb + 4 * (shape.leads - 1))  # Delta (dO, O); own tiles; row blocks; column
    out.append(Estimate(
        "cropa_bwd_kernel", bh * (8 * n * d * el + 4 * n) / big, bh * loads * el / big,
        bh * shape.leads * nb * nb * 14 * cfg.bwd_block_t ** 2 * cfg.block_d / 1e9,
        bh * shape.leads * (shape.leads - 1) * tp * cfg.block_d * 7 * 2 / 1e9,  # 7 D-long ops per pair
        bh, ctas["bwd"]))
    return out


def _ctas(shape: AttnShape) -> dict[str, int]:
    """CTAs per SM of the two kernels at this shape, from the offline kernel report (sm_90)."""
    from ecg_jepa import kernel_report
    from ecg_jepa.ops.cropa import triton as launch

    t, h, n_leads, d = shape.slots, shape.h, shape.leads, shape.d
    qkv = torch.empty(1, n_leads * t, 3, h, d, dtype=torch.bfloat16)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty(1, h, n_leads * t)
    cfg = launch.config(n_leads, t, d, q.dtype)
    got = {}
    kernel, _, args, kwargs = launch.fwd_launch(q, k, v, o, lse, n_leads, 0.1, cfg)
    got["fwd"] = kernel_report._triton_row(kernel, args, kwargs, 90, "", set(), False).ctas_per_sm
    g = [torch.empty_like(o) for _ in range(4)]
    kernel, _, args, kwargs = launch.bwd_launch(g[0], q, k, v, o, lse, torch.empty_like(lse), *g[1:], n_leads, 0.1, cfg)
    got["bwd"] = kernel_report._triton_row(kernel, args, kwargs, 90, "", set(), False).ctas_per_sm
    return got


def report() -> str:
    lines = [
        "| shape | kernel | min HBM MB | loaded MB (L1/L2) | tensor GFLOP | fp32 GFLOP | programs | CTAs/SM | "
        "HBM µs | L1 µs | tensor µs | fp32 µs | predicted µs |",
        "|" + "---|" * 13,
    ]
    summary = ["| shape | today fwd / fwd+bwd ms | predicted fwd ms | predicted fwd+bwd ms | target fwd+bwd ms | "
               "sdpa+mask fwd+bwd ms | predicted vs sdpa |", "|" + "---|" * 7]
    for shape in SHAPES["goal"]:
        ests = estimates(shape, _ctas(shape))
        preds = []
        for e in ests:
            t = e.times_us
            low, high = e.predict_us()
            preds.append((low, high))
            lines.append(f"| {shape} | {e.kernel} | {e.hbm_min_mb:.1f} | {e.loaded_mb:.1f} | {e.tc_gflop:.2f} | "
                         f"{e.fp32_gflop:.2f} | {e.programs} | {e.ctas_per_sm} | {t['hbm']:.0f} | {t['l1']:.0f} | "
                         f"{t['tensor']:.0f} | {t['fp32']:.0f} | {low:.0f}–{high:.0f} |")
        key = str(shape)
        fwd = preds[0]
        both = (preds[0][0] + preds[1][0], preds[0][1] + preds[1][1])
        sdpa = SDPA_FWD_BWD_MS[key]
        summary.append(f"| {key} | {TODAY_MS[key][0]:.3f} / {TODAY_MS[key][1]:.3f} | {fwd[0] / 1e3:.3f}–{fwd[1] / 1e3:.3f} | "
                       f"{both[0] / 1e3:.3f}–{both[1] / 1e3:.3f} | ≤ {TARGETS_FWD_BWD_MS[key]:.2f} | {sdpa:.3f} | "
                       f"{sdpa / (both[1] / 1e3):.1f}–{sdpa / (both[0] / 1e3):.1f}x |")
    return "\n".join(lines) + "\n\n" + "\n".join(summary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ecg_jepa.benchmarks.perf_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--md", default=None, help="write the tables to this Markdown file")
    args = parser.parse_args(argv)
    text = report()
    print(text)
    if args.md:
        Path(args.md).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
