"""Record what ``auto`` reads on a GPU: ``python -m ecg_jepa.benchmarks.auto_table RESULT.json [--source PATH]``
turns an ``ecg-jepa bench`` result (attention rows) into a table of ``ecg_jepa/ops/cropa/measured.json``,
replacing the table of the same card and dtype. Only rows that passed parity and were timed count; the
dense row (not CroPA) never does."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from ecg_jepa.ops.cropa import BACKENDS
from ecg_jepa.ops.cropa.measured import TABLE_FILE

from .verdict import passed

SHAPE = re.compile(r"B(\d+) H(\d+) L(\d+)xT(\d+)=N\d+ d(\d+)")


def table_of(result: dict, dtype: str, source: str) -> dict:
    """The table of one bench result: card, versions, commit, and per shape the backends' median times."""
    machine = result["machine"]
    if "sm" not in machine:
        raise SystemExit(f"that result was measured on {machine['device']}, not a GPU: auto's tables are for GPUs")
    shapes: dict[str, dict] = {}
    for row in result["rows"]:
        if row["case"] != "attention" or row["dtype"] != dtype or row["impl"] not in BACKENDS or not passed(row["parity"]):
            continue
        b, h, leads, slots, d = map(int, SHAPE.fullmatch(row["shape"]).groups())
        entry = shapes.setdefault(row["shape"], dict(batch=b, heads=h, leads=leads, slots=slots, head_dim=d,
                                                     fwd={}, fwd_bwd={}))
        for key in ("fwd", "fwd_bwd"):
            if row.get(key):
                entry[key][row["impl"]] = round(row[key]["median"], 4)
    return dict(device=machine["device"], sm=machine["sm"], dtype=dtype, torch=machine["torch"],
                triton=machine.get("triton"), commit=machine["commit"], when=machine["when"], source=source,
                shapes=[e for e in shapes.values() if e["fwd"]])


def record(result_file: Path, dtype: str, source: str, table_file: Path = TABLE_FILE) -> dict:
    table = table_of(json.loads(result_file.read_text()), dtype, source)
    if not table["shapes"]:
        raise SystemExit(f"{result_file}: no {dtype} attention row passed parity and was timed")
    existing = json.loads(table_file.read_text())["tables"] if table_file.exists() else []
    kept = [t for t in existing if (t["device"], t["dtype"]) != (table["device"], table["dtype"])]
    table_file.write_text(json.dumps({"tables": [*kept, table]}, indent=1) + "\n")
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ecg_jepa.benchmarks.auto_table", description=__doc__.split("\n")[0])
    parser.add_argument("result", type=Path, help="an ecg-jepa bench result (.json) measured on a GPU")
    parser.add_argument("--dtype", default="bfloat16", help="which rows (default: bfloat16, the training dtype)")
    parser.add_argument("--source", default=None, help="where the result is committed (default: its path)")
    parser.add_argument("--out", type=Path, default=TABLE_FILE, help="the table file (default: the package's)")
    args = parser.parse_args(argv)
    table = record(args.result, args.dtype, args.source or str(args.result), args.out)
    print(f"{args.out}: {table['device']} sm {table['sm']} {table['dtype']}, {len(table['shapes'])} shapes")


if __name__ == "__main__":
    main()
