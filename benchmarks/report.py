"""The benchmark's rows, side-by-side ratios, the Markdown table and the result files (JSON, CSV, MD,
PNG) with the machine, versions and commit beside the numbers."""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .timing import Timing
from .verdict import UNCHECKED

ALTERNATIVES = ("sdpa", "flex", "dense")  # the best non-ours ways to run an attention


@dataclass
class Row:
    """One timed (or refused) configuration. ``parity``: its verdict (:mod:`.verdict`), unchecked until a
    check ran; ``flops``: forward FLOPs (the backward counts 2.5x); ``bytes``: the minimum forward bytes
    moved (each input read once, each output written once)."""

    case: str
    shape: str
    dtype: str
    impl: str
    parity: str = UNCHECKED
    fwd: Timing | None = None
    fwd_bwd: Timing | None = None
    flops: float = 0.0
    bytes: float = 0.0
    extra: dict = field(default_factory=dict)


def add_ratios(rows: list[Row]) -> None:
    """``vs_ref``: the reference's time over the row's; ``vs_alt``: the best alternative's over the row's
    (> 1: faster), within each (case, shape, dtype) group of one run."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault((r.case, r.shape, r.dtype), []).append(r)
    for group in groups.values():
        for attr in ("fwd", "fwd_bwd"):
            ref = next((getattr(r, attr) for r in group if r.impl == "reference" and getattr(r, attr)), None)
            alts = [getattr(r, attr).median for r in group if r.impl in ALTERNATIVES and getattr(r, attr)]
            for r in group:
                t = getattr(r, attr)
                if t is None:
                    continue
                if ref:
                    r.extra[f"{attr}_vs_ref"] = ref.median / t.median
                if alts:
                    r.extra[f"{attr}_vs_alt"] = min(alts) / t.median


LEGEND = f"""Parity: `ok`: the row's result (forward, and gradients where it has them) was compared with a float64 run
and was within 2x the same-precision reference's own error plus one unit in the last place
(`ecg_jepa/ops/parity.py`); encoder blocks and training steps are compared with twins of the same weights
whose attention is the `reference` backend. `FAIL <what> err <max> > <allowed>`: it was not (or the check
raised): the row is not timed. `n/a: <reason>`: nothing to compare (not CroPA, a throughput), or a
recorded table whose check never ran. `skipped: <reason>`: the backend cannot run here. `{UNCHECKED}`: no
check ran on the row (a benchmark bug): do not trust it."""


def _fmt_t(t: Timing | None) -> str:
    return "—" if t is None else f"{t.median:.3f} ({t.p20:.3f}–{t.p80:.3f})"


def _fmt_x(v) -> str:
    return "—" if v is None else f"{v:.2f}x"


def _fmt_rate(extra: dict) -> str:
    for key, unit in (("ecg_per_s", "ECG/s"), ("records_per_s", "records/s")):
        if key in extra:
            return f"{extra[key]:,.0f} {unit}"
    return "—"


def progress_line(r: Row, ceil: dict) -> str:
    """One measured row as a line (the run's progress): times, and on a GPU the forward's GB/s."""
    line = f"{r.case} | {r.shape} | {r.dtype} | {r.impl}: "
    if r.fwd is None and r.fwd_bwd is None and _fmt_rate(r.extra) == "—":
        return line + f"parity {r.parity}" + (f"; {r.extra['fwd_bwd']}" if "fwd_bwd" in r.extra else "")
    parts = [f"fwd {r.fwd.median:.3f} ms" if r.fwd else "", f"fwd+bwd {r.fwd_bwd.median:.3f} ms" if r.fwd_bwd else "",
             f"{r.bytes / r.fwd.median / 1e6:.0f} GB/s fwd" if ceil and r.fwd and r.bytes else "",
             _fmt_rate(r.extra) if _fmt_rate(r.extra) != "—" else "", f"parity {r.parity}"]
    return line + ", ".join(p for p in parts if p)


def table(rows: list[Row], ceil: dict) -> str:
    """A Markdown table of the run; on a GPU with TFLOP/s and GB/s as % of the measured ceilings."""
    head = ["case", "shape", "dtype", "impl", "parity", "fwd ms (p20–p80)", "fwd+bwd ms (p20–p80)",
            "fwd vs ref", "fwd vs alt", "f+b vs ref", "f+b vs alt", "rate"]
    if ceil:
        head += ["fwd TFLOP/s (% peak)", "fwd GB/s (% copy)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.case, r.shape, r.dtype, r.impl, r.parity, _fmt_t(r.fwd),
                 _fmt_t(r.fwd_bwd) if r.fwd_bwd or "fwd_bwd" not in r.extra else r.extra["fwd_bwd"],
                 _fmt_x(r.extra.get("fwd_vs_ref")), _fmt_x(r.extra.get("fwd_vs_alt")),
                 _fmt_x(r.extra.get("fwd_bwd_vs_ref")), _fmt_x(r.extra.get("fwd_bwd_vs_alt")), _fmt_rate(r.extra)]
        if ceil:
            if r.fwd and r.flops:
                tf = r.flops / r.fwd.median / 1e9
                gb = r.bytes / r.fwd.median / 1e6
                cells += [f"{tf:.1f} ({100 * tf / ceil['bf16_TFLOPs']:.0f}%)", f"{gb:.0f} ({100 * gb / ceil['copy_GBps']:.0f}%)"]
            else:
                cells += ["—", "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _chart(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [(f"{r.case}\n{r.shape}\n{r.impl}", r.extra["fwd_bwd_vs_ref"]) for r in rows if "fwd_bwd_vs_ref" in r.extra]
    if not bars:
        return
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(bars)), 4.5))
    ax.bar(range(len(bars)), [v for _, v in bars], color="tab:blue")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(bars)), [n for n, _ in bars], rotation=90, fontsize=6)
    ax.set_ylabel("forward+backward speed-up over reference")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(stem: Path, rows: list[Row], info: dict, text: str) -> None:
    """``stem``.json (machine + rows), .csv, .md (header + table) and .png (speed-ups over the reference)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    records = [{**asdict(r), "fwd": r.fwd and asdict(r.fwd), "fwd_bwd": r.fwd_bwd and asdict(r.fwd_bwd)} for r in rows]
    stem.with_suffix(".json").write_text(json.dumps({"machine": info, "rows": records}, indent=1, default=str))
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case", "shape", "dtype", "impl", "parity", "fwd_ms", "fwd_p20", "fwd_p80",
                         "fwd_bwd_ms", "fwd_bwd_p20", "fwd_bwd_p80", "fwd_bwd_vs_ref", "fwd_bwd_vs_alt"])
        for r in rows:
            writer.writerow([r.case, r.shape, r.dtype, r.impl, r.parity,
                             *(["", "", ""] if r.fwd is None else [r.fwd.median, r.fwd.p20, r.fwd.p80]),
                             *(["", "", ""] if r.fwd_bwd is None else [r.fwd_bwd.median, r.fwd_bwd.p20, r.fwd_bwd.p80]),
                             r.extra.get("fwd_bwd_vs_ref", ""), r.extra.get("fwd_bwd_vs_alt", "")])
    stem.with_suffix(".md").write_text(text)
    _chart(rows, stem.with_suffix(".png"))
