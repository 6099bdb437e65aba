"""A performance model of the Triton CroPA kernels: ``python -m ecg_jepa.benchmarks.perf_model [--md FILE]``.

For each shape of the speed goals it counts, per kernel, the minimal HBM bytes (each input read once, each
output written once), the bytes the design actually loads (re-reads counted: they come from L1/L2), the
tensor-core FLOPs it issues (padded tiles counted), the CUDA-core FLOPs of its column part, and the
programs and CTAs per SM (from the offline kernel report). Two bounds:

- resources: every resource overlapping perfectly (the maximum of the per-resource times) to half of the
  non-dominant time exposed, from the copy and bf16 matmul ceilings measured on an H100 in the run of
  :data:`MEASURED` (L1 and fp32 rates from the datasheet);
- latency: a program is a chain of dependent memory round trips (each load waited for before the next
  iteration issues its own), so the kernel takes (waves of programs) x (round trips per program) x (the
  time of one round trip). The round-trip times (:data:`ROUND_TRIP_US`, model parameters) are fitted to
  that run's sweep (its backward iterations do more work).

The prediction is the larger of the two. The sweep's kernel times are explained by the latency bound
within about 30 %; the resource bound is 3-10x below them. Measured numbers (ceilings, kernel times, the
sweep) are read from the committed result files of :data:`MEASURED`. Nothing here needs a GPU.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .bench_cropa import SHAPES, AttnShape

MEASURED = Path(__file__).resolve().parent / "results" / "h100-20261126"
"""The H100 run the model is fitted to and compared with: ``bench-kernels.json`` (the ceilings, triton's and
sdpa's times) and ``tune-cropa.json`` (the sweep)."""

SMS = 132
CLOCK_GHZ = 1.755
L1_GBPS = SMS * 128 * CLOCK_GHZ  # 128 B/clk/SM of L1 load bandwidth ≈ 29.7 TB/s
FP32_TFLOPS = SMS * 128 * 2 * CLOCK_GHZ / 1e3  # 128 FP32 lanes/SM, an FMA = 2 FLOPs ≈ 59 TFLOP/s
LAUNCH_US = 4.0  # a kernel launch and its tail, roughly
ROUND_TRIP_US = {"cropa_fwd_kernel": 0.75, "cropa_bwd_kernel": 1.3}  # model parameters, fitted to MEASURED's sweep

TARGETS_FWD_BWD_MS = {"B64 H16 L8xT50=N400 d48": 0.22, "B64 H16 L8xT23=N184 d48": 0.11,
                      "B128 H16 L8xT17=N136 d48": 0.12, "B64 H16 L12xT50=N600 d48": 0.36}


@functools.lru_cache(maxsize=None)
def measured(name: str) -> dict:
    """A result file of :data:`MEASURED`, parsed; a clear error if it is not there."""
    path = MEASURED / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the performance model reads its measured numbers from the "
                                "committed H100 results (restore benchmarks/results/h100-20261126/)")
    return json.loads(path.read_text())


def ceiling(key: str) -> float:
    """A ceiling measured in the run (``copy_GBps``: device copy, bytes read + written; ``bf16_TFLOPs``)."""
    return measured("bench-kernels.json")["machine"]["ceilings"][key]


def bench_ms(impl: str, shape: str, attr: str) -> float:
    """The median ms of ``impl``'s bf16 attention row at ``shape`` in the run (``attr``: fwd or fwd_bwd)."""
    for row in measured("bench-kernels.json")["rows"]:
        if (row["case"], row["impl"], row["shape"], row["dtype"]) == ("attention", impl, shape, "bfloat16") and row[attr]:
            return row[attr]["median"]
    raise KeyError(f"no timed bfloat16 {impl} attention row at {shape} in {MEASURED / 'bench-kernels.json'}")


@dataclass
class Estimate:
    kernel: str
    hbm_min_mb: float
    loaded_mb: float
    tc_gflop: float
    fp32_gflop: float
    programs: int
    ctas_per_sm: int
    round_trips: int = 0  # dependent memory round trips per program

    @property
    def times_us(self) -> dict:
        return {"hbm": self.hbm_min_mb / ceiling("copy_GBps") * 1e3, "l1": self.loaded_mb / L1_GBPS * 1e3,
                "tensor": self.tc_gflop / ceiling("bf16_TFLOPs") * 1e3, "fp32": self.fp32_gflop / FP32_TFLOPS * 1e3}

    @property
    def waves(self) -> float:
        return self.programs / (SMS * max(1, self.ctas_per_sm))

    @property
    def latency_us(self) -> float:
        """Waves of programs times each program's chain of dependent round trips."""
        return math.ceil(self.waves) * self.round_trips * ROUND_TRIP_US[self.kernel] + LAUNCH_US

    def resources_us(self) -> tuple[float, float]:
        """(perfect overlap, half of the rest exposed), with the last wave's imbalance and a launch."""
        t = self.times_us
        tail = math.ceil(self.waves) / self.waves if self.waves >= 1 else 1 / self.waves
        low = max(t.values()) * min(tail, 1.5) + LAUNCH_US
        high = (max(t.values()) + 0.5 * (sum(t.values()) - max(t.values()))) * min(tail, 1.5) + LAUNCH_US
        return low, high

    def predict_us(self) -> float:
        """The larger of the latency bound and the resource bound's upper end."""
        return max(self.latency_us, self.resources_us()[1])


def estimates(shape: AttnShape, ctas: dict[str, int], cfg=None) -> list[Estimate]:
    """The forward's and the backward's estimate at ``shape`` under launch configuration ``cfg`` (default:
    the backend's, for an H100)."""
    from ecg_jepa.ops.cropa.triton import config

    cfg = cfg or config(shape.leads, shape.slots, shape.d, torch.bfloat16)
    bh, n, d, el, n_leads = shape.b * shape.h, shape.n, shape.d, 2, shape.leads
    big = 1e6
    out = []
    # Forward: one program per (batch, head, group of leads); per lead and slot block: q, the column keys
    # lead by lead, the row part's key blocks, the column values lead by lead.
    nb = math.ceil(shape.slots / cfg.block_t)
    tp = nb * cfg.block_t
    groups = math.ceil(n_leads / cfg.leads_per_program)
    loads = n * d * (1 + 2 * nb + 2 * (n_leads - 1))  # q; the lead's K, V per slot block; column K_m, V_m
    out.append(Estimate(
        "cropa_fwd_kernel", bh * (4 * n * d * el + 4 * n) / big, bh * loads * el / big,
        bh * n_leads * nb * nb * 4 * cfg.block_t ** 2 * cfg.block_d / 1e9,
        bh * n_leads * (n_leads - 1) * tp * cfg.block_d * 4 / 1e9,  # QK and PV, 2 FLOPs per element each
        bh * groups, ctas["fwd"], cfg.leads_per_program * nb * (2 * n_leads - 1 + nb)))
    # Backward: one program per (batch, head); Delta's row blocks, then per lead and slot block: dq (row
    # blocks, then K_m and V_m lead by lead), dk and dv (row blocks, then Q_m and dO_m lead by lead).
    nb = math.ceil(shape.slots / cfg.bwd_block_t)
    tp = nb * cfg.bwd_block_t
    loads = n * d * (2 + 4 + 4 * nb + 4 * (n_leads - 1))  # Delta (dO, O); own tiles; row blocks; column
    out.append(Estimate(
        "cropa_bwd_kernel", bh * (8 * n * d * el + 4 * n) / big, bh * loads * el / big,
        bh * n_leads * nb * nb * 14 * cfg.bwd_block_t ** 2 * cfg.block_d / 1e9,
        bh * n_leads * (n_leads - 1) * tp * cfg.block_d * 7 * 2 / 1e9,  # 7 D-long ops per pair
        bh, ctas["bwd"], math.ceil(n / cfg.bwd_block_t) + n_leads * nb * (2 * nb + 2 * (n_leads - 1))))
    return out


def _ctas(shape: AttnShape, cfg=None) -> dict[str, int]:
    """CTAs per SM of the two kernels at this shape and configuration, from the offline kernel report (sm_90)."""
    from ecg_jepa import kernel_report
    from ecg_jepa.ops.cropa import triton as launch

    t, h, n_leads, d = shape.slots, shape.h, shape.leads, shape.d
    qkv = torch.empty(1, n_leads * t, 3, h, d, dtype=torch.bfloat16)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty(1, h, n_leads * t)
    cfg = cfg or launch.config(n_leads, t, d, q.dtype)
    got = {}
    kernel, _, args, kwargs = launch.fwd_launch(q, k, v, o, lse, n_leads, 0.1, cfg)
    got["fwd"] = kernel_report._triton_row(kernel, args, kwargs, 90, "", set(), False).ctas_per_sm
    g = [torch.empty_like(o) for _ in range(4)]
    kernel, _, args, kwargs = launch.bwd_launch(g[0], q, k, v, o, lse, torch.empty_like(lse), *g[1:], n_leads, 0.1, cfg)
    got["bwd"] = kernel_report._triton_row(kernel, args, kwargs, 90, "", set(), False).ctas_per_sm
    return got


def look_back() -> str:
    """The model against the H100 sweep's kernel times, for the configurations that separate its causes:
    every lead in one forward program or one lead each; 32- or 64-slot backward tiles."""
    import dataclasses

    from ecg_jepa.ops.cropa.triton import config

    lines = ["| shape | leads / fwd program | bwd tile | CTAs/SM fwd, bwd | measured fwd / bwd µs | "
             "latency model fwd / bwd µs | resource bound fwd / bwd µs |", "|" + "---|" * 7]
    shapes = {str(s): s for s in SHAPES["goal"]}
    for row in measured("tune-cropa.json")["rows"]:
        c, shape = row["config"], shapes.get(row["shape"])
        if shape is None or c["num_warps"] != 4 or c["bwd_num_warps"] != 4 or c["leads_per_program"] not in (1, shape.leads):
            continue
        base = config(shape.leads, shape.slots, shape.d, torch.bfloat16)
        if c["block_t"] != base.block_t:
            continue
        cfg = dataclasses.replace(base, **{k: v for k, v in c.items() if k in base.__dataclass_fields__})
        ctas = _ctas(shape, cfg)
        fwd, bwd = estimates(shape, ctas, cfg)
        lines.append(f"| {shape} | {c['leads_per_program']} | {c['bwd_block_t']} | {ctas['fwd']}, {ctas['bwd']} | "
                     f"{1e3 * row['fwd_ms']:.0f} / {1e3 * row['bwd_ms']:.0f} | {fwd.latency_us:.0f} / {bwd.latency_us:.0f} | "
                     f"{fwd.resources_us()[1]:.0f} / {bwd.resources_us()[1]:.0f} |")
    return "\n".join(lines)


def report() -> str:
    lines = [
        "| shape | kernel | min HBM MB | loaded MB (L1/L2) | tensor GFLOP | fp32 GFLOP | programs | CTAs/SM | "
        "round trips / program | HBM µs | L1 µs | tensor µs | fp32 µs | resources µs | latency µs |",
        "|" + "---|" * 15,
    ]
    summary = ["| shape | measured fwd / fwd+bwd ms | predicted fwd ms | predicted fwd+bwd ms | target fwd+bwd ms | "
               "sdpa+mask fwd+bwd ms | predicted vs sdpa |", "|" + "---|" * 7]
    for shape in SHAPES["goal"]:
        ests = estimates(shape, _ctas(shape))
        for e in ests:
            t = e.times_us
            low, high = e.resources_us()
            lines.append(f"| {shape} | {e.kernel} | {e.hbm_min_mb:.1f} | {e.loaded_mb:.1f} | {e.tc_gflop:.2f} | "
                         f"{e.fp32_gflop:.2f} | {e.programs} | {e.ctas_per_sm} | {e.round_trips} | {t['hbm']:.0f} | "
                         f"{t['l1']:.0f} | {t['tensor']:.0f} | {t['fp32']:.0f} | {low:.0f}–{high:.0f} | {e.latency_us:.0f} |")
        key = str(shape)
        fwd, both = ests[0].predict_us(), sum(e.predict_us() for e in ests)
        sdpa = bench_ms("sdpa", key, "fwd_bwd")
        summary.append(f"| {key} | {bench_ms('triton', key, 'fwd'):.3f} / {bench_ms('triton', key, 'fwd_bwd'):.3f} | "
                       f"{fwd / 1e3:.3f} | {both / 1e3:.3f} | ≤ {TARGETS_FWD_BWD_MS[key]:.2f} | {sdpa:.3f} | "
                       f"{sdpa / (both / 1e3):.2f}x |")
    return (f"Current defaults (kernel time; fwd+bwd adds the autograd wrapper's few µs; measured: {MEASURED.name}):\n\n"
            + "\n".join(lines) + "\n\n" + "\n".join(summary) + "\n\nThe model against the H100 sweep:\n\n" + look_back())


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
