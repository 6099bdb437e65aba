"""The GPU order of ``auto``, from measurements: ``measured.json`` beside this file holds, per GPU generation,
the median times of every CroPA backend that passed parity, at the benchmark's shapes, with the card,
versions, commit and result file they come from (written by ``python -m ecg_jepa.benchmarks.auto_table``
from an ``ecg-jepa bench`` result). ``auto`` ranks the backends by the times of the measured shape nearest
to its input; on a GPU generation with no table it takes the performance model's predicted order
(``benchmarks/results/performance-model.md``), and says so.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

from ..registry import InputSpec

TABLE_FILE = Path(__file__).with_name("measured.json")

PREDICTED_GPU_ORDER = {
    True: ("split", "sdpa", "triton", "flex", "structured", "reference"),
    False: ("split", "triton", "sdpa", "flex", "structured", "reference"),
}
"""With / without gradients, where no table exists: the performance model's order (split: the row pass on
the memory-efficient kernel plus a one-round-trip column kernel; see performance-model.md)."""


@functools.lru_cache(maxsize=1)
def tables() -> tuple[dict, ...]:
    """The committed tables, oldest first."""
    return tuple(json.loads(TABLE_FILE.read_text())["tables"]) if TABLE_FILE.exists() else ()


def nearest(entries: list[dict], n_leads: int, n_slots: int, head_dim: int | None = None) -> dict:
    """The measured shape closest to (n_leads, n_slots, head_dim): the same lead count first, then the
    nearest slot count by ratio, then the same head dim."""
    return min(entries, key=lambda e: (e["leads"] != n_leads, abs(math.log(e["slots"] / n_slots)),
                                       head_dim is not None and e["head_dim"] != head_dim))


def table_for(spec: InputSpec) -> tuple[dict, str] | None:
    """The table for spec's GPU and dtype, and what differs from it ("" if nothing): the same card first
    (else another of the same generation), the same dtype first (else bfloat16, the training dtype)."""
    sm = f"{spec.capability[0]}.{spec.capability[1]}"
    found = [t for t in tables() if t["sm"] == sm]
    if not found:
        return None
    found = [t for t in found if t["device"] == spec.device_name] or found
    dtype = str(spec.dtype).removeprefix("torch.")
    table = ([t for t in found if t["dtype"] == dtype] or [t for t in found if t["dtype"] == "bfloat16"] or found)[-1]
    return table, ("" if table["dtype"] == dtype else f"; no {dtype} table, {table['dtype']}'s order used")


def measured_order(spec: InputSpec) -> tuple[tuple[str, ...], str] | None:
    """The backends measured on spec's GPU generation, fastest first at the nearest measured shape, and a
    line saying what was measured where; None without a table for it."""
    if spec.capability is None or spec.n_leads is None:
        return None
    chosen = table_for(spec)
    if chosen is None:
        return None
    table, caveat = chosen
    entry = nearest(table["shapes"], spec.n_leads, spec.shape[-2] // spec.n_leads, spec.shape[-1])
    key = "fwd_bwd" if spec.needs_grad else "fwd"
    times = entry[key]
    ranked = tuple(sorted(times, key=times.get))
    what = "forward+backward" if spec.needs_grad else "forward"
    why = (f"{what} measured on {table['device']} ({table['dtype']}, B{entry['batch']} H{entry['heads']} "
           f"L{entry['leads']} T{entry['slots']} d{entry['head_dim']}: "
           + ", ".join(f"{name} {times[name]:.3f} ms" for name in ranked)
           + f"; torch {table['torch']}, triton {table['triton']}, commit {table['commit']}: {table['source']}"
           + f"{caveat})")
    return ranked, why
