"""Data: ``prepare-data`` records/s on generated records (500 Hz, 12 leads, 10 s: read, select leads,
FFT-resample to 250 Hz, write float16 shards), and ShardDataset + DataLoader ECG/s over a shard."""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from ecg_jepa.constants import STANDARD_12
from ecg_jepa.data.shards import (
    PrepareOptions,
    ShardDataset,
    open_folder,
    prepare_data,
    write_shard,
)

from .report import Row
from .verdict import not_applicable

THROUGHPUT = not_applicable("a throughput, no result to compare")


def rows(n_records: int, n_loader: int, workers: int = 2, epochs: int = 2) -> list[Row]:
    out = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        src, prepared, loader_dir = Path(tmp) / "src", Path(tmp) / "prepared", Path(tmp) / "loader"
        src.mkdir()
        for i in range(n_records):
            np.save(src / f"r{i}.npy", rng.normal(0, 0.3, size=(12, 5000)).astype(np.float32))
            (src / f"r{i}.json").write_text(json.dumps({"fs": 500, "leads": list(STANDARD_12)}))
        tic = time.perf_counter()
        prepare_data(src, prepared, workers=workers, progress=False)
        row = Row("prepare-data", f"{n_records} records, {workers} workers", "float16", "ours", THROUGHPUT)
        row.extra["records_per_s"] = n_records / (time.perf_counter() - tic)
        out.append(row)
        # Loader: one shard of n_loader records, shuffled batches of 256, after a warm-up epoch.
        open_folder(loader_dir, PrepareOptions())
        arrays = [rng.normal(0, 0.3, size=(8, 2500)).astype(np.float16) for _ in range(n_loader)]
        write_shard(loader_dir, 0, arrays, [{"key": f"k{i}", "id": f"k{i}", "labels": {}} for i in range(n_loader)])
        loader = DataLoader(ShardDataset(loader_dir), batch_size=256, shuffle=True, num_workers=workers,
                            persistent_workers=workers > 0)
        for _ in loader:  # warm-up: workers start, pages come into the cache
            pass
        tic = time.perf_counter()
        seen = sum(len(x) for _ in range(epochs) for x, _ in loader)
        row = Row("shard loader", f"{n_loader} records, batch 256, {workers} workers", "float16->float32", "ours",
                  THROUGHPUT)
        row.extra["ecg_per_s"] = seen / (time.perf_counter() - tic)
        out.append(row)
    return out
