"""Finding the records of a data folder, with the labels that live beside them.

Layouts: a PTB-XL tree (``ptbxl_database.csv`` + records100/records500), the processed PTB-XL arrays of
``shared/data/ptbxl-processed`` (``index.csv`` + ``ptbxl_proc_*.npy`` + ``labels_*.csv``), and any folder of
WFDB headers, CPSC/CODE-15 ``.mat`` files or ``.npy`` + ``.json`` arrays, where a ``labels.csv`` (or
``<folder>.csv``) keyed by ``record``, ``ID``, ``idx`` or ``ecg_id`` adds labels to the records it names.
"""
from __future__ import annotations

import ast
import csv
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..constants import FS, STANDARD_12
from ..errors import MissingInputError
from .records import Record, read_record

_KEY_COLUMNS = ("record", "ID", "ecg_id", "idx")
_PROCESSED_TASK = "diag_superclass"


@dataclass
class Item:
    """One record to read: a file, or a row of an array file; ``labels`` come from files beside it."""

    key: str
    path: str
    row: int | None = None
    labels: dict = field(default_factory=dict)


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _label_value(value: str):
    try:
        number = float(value)
        return int(number) if number.is_integer() else number
    except ValueError:
        return value.strip()


@functools.lru_cache(maxsize=64)
def _labels_by_key(folder: Path) -> dict[str, dict]:
    """``labels.csv`` (or ``<folder name>.csv``, as LUDB's ``ludb.csv``) rows keyed by their record column."""
    path = next((p for p in (folder / "labels.csv", folder / f"{folder.name}.csv") if p.exists()), None)
    if path is None:
        return {}
    rows = _csv_rows(path)
    rows = [{k.strip(): (v or "").strip() for k, v in r.items()} for r in rows]
    column = next((c for c in _KEY_COLUMNS if rows and c in rows[0]), None)
    if column is None:
        return {}
    return {str(_label_value(r[column])): {k: _label_value(v) for k, v in r.items() if k != column} for r in rows}


def _ptbxl_tree(src: Path) -> list[Item]:
    items = []
    for row in _csv_rows(src / "ptbxl_database.csv"):
        rel = row.get("filename_hr") if (src / "records500").exists() else row.get("filename_lr")
        labels = {"scp_codes": ast.literal_eval(row.get("scp_codes") or "{}"), "ecg_id": int(float(row["ecg_id"]))}
        for key in ("strat_fold", "age", "sex"):
            if row.get(key) not in (None, ""):
                labels[key] = _label_value(row[key])
        items.append(Item(f"ptbxl:{labels['ecg_id']}", str(src / f"{rel}.hea"), None, labels))
    return items


def _ptbxl_processed(src: Path) -> list[Item]:
    labels = {r["ecg_id"]: r for r in _csv_rows(src / f"labels_{_PROCESSED_TASK}.csv")}
    items = []
    for row in _csv_rows(src / "index.csv"):
        lab = labels.get(row["ecg_id"], {})
        entry = {k: _label_value(v) for k, v in lab.items() if k not in ("row", "ecg_id")}
        entry["ecg_id"] = int(row["ecg_id"])
        items.append(Item(f"ptbxl:{row['ecg_id']}", str(src / row["file"]), int(row["row_in_file"]), entry))
    return items


def find_records(src: str | os.PathLike) -> list[Item]:
    """Every record under ``src`` (a folder, or one record file), in a stable order."""
    src = Path(src)
    if src.is_file():
        return [Item(src.stem, str(src))]
    if not src.is_dir():
        raise MissingInputError(f"no data at {src}")
    if (src / "ptbxl_database.csv").exists():
        return _ptbxl_tree(src)
    if (src / "index.csv").exists() and any(src.glob("ptbxl_proc_*.npy")):
        return _ptbxl_processed(src)
    items = []
    for path in sorted(src.rglob("*")):
        suffix = path.suffix.lower()
        take = (
            suffix == ".hea"
            or (suffix in (".mat", ".dat") and not path.with_suffix(".hea").exists())  # a lone .dat: a failure to list
            or (suffix == ".npy" and path.with_suffix(".json").exists())
        )
        if take:
            items.append(Item(str(path.relative_to(src)), str(path)))
    return items


def load_item(item: Item) -> Record:
    """Read an item's record and merge the labels found beside it (``labels.csv`` of its folder or the
    folder above)."""
    if item.row is not None:  # processed PTB-XL: (n, 12, 2500) float16 at FS (250 Hz)
        signal = np.load(item.path, mmap_mode="r")[item.row].astype(np.float32)
        return Record(item.key, signal, float(FS), STANDARD_12, "ptbxl-processed", dict(item.labels))
    record = read_record(item.path)
    path = Path(item.path)
    for folder in (path.parent, path.parent.parent):
        table = _labels_by_key(folder)
        for key in (record.id, str(record.labels.get("idx", "")), record.id.lstrip("0")):
            if key in table:
                record.labels.update(table[key])
                break
        else:
            continue
        break
    record.labels.update(item.labels)
    return record
