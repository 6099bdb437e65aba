"""``prepare-data``: every record of a source, prepared in parallel into memory-mappable float16 shards
plus a manifest; ``ShardDataset`` reads them back.

Layout of OUT:
- ``config.json``: leads, fs, seconds and preprocessing options (a re-run must use the same ones);
- ``shard-NNNNN.npy``: float16 (n, len(leads), fs·seconds), written whole to a temp file then renamed;
- ``manifest.jsonl``: one line per stored record (key, id, source, shard, offset, labels), appended only
  after its shard is in place, so a shard the manifest does not name is an interrupted leftover;
- ``failures.jsonl``: one line per record that could not be prepared, with the reason.
A re-run skips every key already in the manifest, tries the earlier failures again (a fixed file is then
prepared) and writes new shards after the last.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..atomic import atomic_write
from ..constants import FS, LEADS, N_SAMPLES
from ..errors import InputError, MissingInputError
from ..jsonl import append_jsonl, read_jsonl, write_jsonl
from .prepare import prepare
from .records import RecordError
from .sources import Item, find_records, load_item


@dataclass(frozen=True)
class PrepareOptions:
    """How every record is turned into model input (see :func:`ecg_jepa.data.prepare`)."""

    leads: tuple[str, ...] = LEADS
    fs: int = FS
    seconds: float = N_SAMPLES / FS
    pad: bool = False
    band_pass: bool = False
    zscore: bool = False


def _prepare_one(args: tuple[Item, PrepareOptions]) -> tuple[Item, np.ndarray | None, dict | str]:
    item, opt = args
    try:
        record = load_item(item)
        x = prepare(record, opt.leads, opt.fs, opt.seconds, pad=opt.pad, band_pass=opt.band_pass, zscore=opt.zscore)
        if np.abs(x).max() > np.finfo(np.float16).max:
            raise RecordError(f"record {record.id} exceeds the float16 range of the shards")
        return item, x.astype(np.float16), {"id": record.id, "source": record.source, "labels": record.labels}
    except RecordError as e:
        return item, None, str(e)
    except Exception as e:  # any failure is this record's, named, never the run's
        return item, None, f"{item.path}: {type(e).__name__}: {str(e)[:300]}"


def _die_with_parent() -> None:
    """Pool-worker initializer: the worker is killed when its parent dies, even by SIGKILL (Linux), and
    leaves SIGINT to the parent."""
    import ctypes
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


def open_folder(out: Path, options: PrepareOptions) -> None:
    """Create ``out`` for shards prepared with ``options``, or check that the shards already in it were."""
    out.mkdir(parents=True, exist_ok=True)
    config = {**asdict(options), "leads": list(options.leads)}
    config_path = out / "config.json"
    if config_path.exists() and json.loads(config_path.read_text()) != config:
        raise InputError(
            f"{out} holds shards prepared with other options ({config_path.read_text().strip()}); "
            "use the same options or a new folder"
        )
    atomic_write(config_path, lambda tmp: Path(tmp).write_text(json.dumps(config)))


def write_shard(out: Path, index: int, arrays: Sequence[np.ndarray], entries: Sequence[dict]) -> None:
    """Store shard ``index``: the (len(leads), samples) float16 arrays stacked, written whole and renamed
    into place, then one manifest line per array (its entry plus ``shard`` and ``offset``)."""
    def save(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.stack(arrays))

    atomic_write(out / f"shard-{index:05d}.npy", save)
    append_jsonl(out / "manifest.jsonl", [{**e, "shard": index, "offset": i} for i, e in enumerate(entries)])


def prepare_data(
    src: str | os.PathLike,
    out: str | os.PathLike,
    options: PrepareOptions = PrepareOptions(),
    workers: int = 2,
    shard_size: int = 4096,
    progress: bool = True,
) -> dict:
    """Prepare every record of ``src`` into shards under ``out`` (resuming a previous run, earlier failures
    tried again); return counts (prepared, failed, skipped: already in the manifest, retried: earlier
    failures tried again)."""
    out = Path(out)
    open_folder(out, options)
    manifest = read_jsonl(out / "manifest.jsonl", repair=True)
    failures = read_jsonl(out / "failures.jsonl", repair=True)
    seen = {r["key"] for r in manifest}
    todo = [item for item in find_records(src) if item.key not in seen]
    retried = {item.key for item in todo} & {r["key"] for r in failures}
    kept = [r for r in failures if r["key"] not in retried]  # failures of records no longer in src stay listed
    write_jsonl(out / "failures.jsonl", kept)
    shard = 1 + max((r["shard"] for r in manifest), default=-1)
    counts = {"prepared": 0, "failed": 0, "skipped": len(seen), "retried": len(retried)}
    with ProcessPoolExecutor(max_workers=workers, initializer=_die_with_parent) if workers > 1 else _Serial() as pool, tqdm(
        total=len(todo), desc="prepare-data", unit="rec", disable=not progress
    ) as bar:
        for start in range(0, len(todo), shard_size):
            chunk = todo[start : start + shard_size]
            arrays, entries, failed = [], [], []
            for item, x, info in pool.map(_prepare_one, [(item, options) for item in chunk], chunksize=8):
                if x is None:
                    failed.append({"key": item.key, "path": item.path, "reason": info})
                else:
                    entries.append({"key": item.key, **info})
                    arrays.append(x)
                bar.update(1)
            if arrays:
                write_shard(out, shard, arrays, entries)
                shard += 1
            append_jsonl(out / "failures.jsonl", failed)
            counts["prepared"] += len(entries)
            counts["failed"] += len(failed)
    return counts


def _as_int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class _Serial:
    """A stand-in for a process pool (workers <= 1): map in this process."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, items, chunksize=1):
        return map(fn, items)


class ShardDataset(Dataset):
    """The records of a ``prepare-data`` folder: item i is ``(x, i)``, x (len(leads), fs·seconds) float32.

    Shards are memory-mapped on first use in each process (safe with DataLoader workers and
    DistributedSampler); ``records[i]`` is the manifest entry (id, source, labels) of item i.
    """

    def __init__(self, root: str | os.PathLike, keys: Sequence[str] | None = None) -> None:
        self.root = Path(root)
        if not (self.root / "manifest.jsonl").exists():
            raise MissingInputError(f"{self.root} has no manifest.jsonl: run `ecg-jepa prepare-data SRC {self.root}` first")
        self.config = json.loads((self.root / "config.json").read_text())
        records = read_jsonl(self.root / "manifest.jsonl")
        if keys is not None:
            wanted = set(keys)
            records = [r for r in records if r["key"] in wanted]
        self.records = records
        self._shard = np.array([r["shard"] for r in records], dtype=np.int64)
        self._offset = np.array([r["offset"] for r in records], dtype=np.int64)
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.records)

    def where(self, field: str, values: set[int]) -> "ShardDataset":
        """The records whose label ``field`` (e.g. PTB-XL's strat_fold) is one of ``values``."""
        keys = [r["key"] for r in self.records if _as_int(r["labels"].get(field)) in values]
        if not keys:
            raise InputError(f"no records of {self.root} have {field} in {sorted(values)}")
        return ShardDataset(self.root, keys=keys)

    def _map(self, shard: int) -> np.ndarray:
        if shard not in self._maps:
            self._maps[shard] = np.load(self.root / f"shard-{shard:05d}.npy", mmap_mode="r")
        return self._maps[shard]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self._map(int(self._shard[i]))[self._offset[i]].astype(np.float32)), i

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        """A batch read shard by shard with one fancy index each (DataLoader calls this for batches)."""
        idx = np.asarray(indices, dtype=np.int64)
        batch = np.empty((len(idx), *self._map(int(self._shard[idx[0]])).shape[1:]), dtype=np.float32)
        for shard in np.unique(self._shard[idx]):
            sel = np.nonzero(self._shard[idx] == shard)[0]
            batch[sel] = self._map(int(shard))[self._offset[idx[sel]]]
        tensor = torch.from_numpy(batch)
        return [(tensor[j], int(i)) for j, i in enumerate(idx)]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": {}}  # memory maps are reopened in each worker
