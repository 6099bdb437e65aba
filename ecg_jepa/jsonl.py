"""JSON Lines files (one JSON object per line) that survive being killed mid-write: ``manifest.jsonl``,
``failures.jsonl`` of ``prepare-data``, a pretraining run's ``log.jsonl``.

A line cut short by an interruption is skipped when read (and, with ``repair``, removed, so that later appends
start on a fresh line); appends are flushed to disk before they return; a rewrite replaces the file whole.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .atomic import atomic_write


def _line(row: dict) -> str:
    return json.dumps(row, default=str) + "\n"


def read_jsonl(path: str | os.PathLike, repair: bool = False) -> list[dict]:
    """The complete object lines of ``path`` ([] if it does not exist); ``repair``: rewrite it without a
    cut-off line."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    rows, bad = [], False
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad = True
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad = True
    if repair and text and (bad or not text.endswith("\n")):
        write_jsonl(path, rows)
    return rows


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    """Replace ``path`` with ``rows``, atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(map(_line, rows))))


def append_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    """Append ``rows`` to ``path`` and fsync it."""
    with open(path, "a") as f:
        f.write("".join(map(_line, rows)))
        f.flush()
        os.fsync(f.fileno())
