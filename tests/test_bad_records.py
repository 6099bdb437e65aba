"""A corpus of broken records: every one is that record's failure, listed with its file and reason, while
every good record is still prepared (prepare-data) and embedded (embed on the raw folder); pool workers
do not outlive a killed prepare-data."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.io import savemat

from ecg_jepa import Encoder, EncoderConfig, save_encoder
from ecg_jepa.cli import main
from ecg_jepa.constants import STANDARD_12
from ecg_jepa.data import prepare_data
from ecg_jepa.data.synthetic import synthesize


def _npy(folder: Path, name: str, signal_, sidecar) -> None:
    np.save(folder / f"{name}.npy", signal_)
    (folder / f"{name}.json").write_text(sidecar if isinstance(sidecar, str) else json.dumps(sidecar))


def _wfdb(folder: Path, name: str, header: str, data: bytes | None) -> None:
    (folder / f"{name}.hea").write_text(header)
    if data is not None:
        (folder / f"{name}.dat").write_bytes(data)


GOOD = ["good-0", "good-1", "good-2"]


def make_corpus(folder: Path) -> dict[str, str]:
    """Three good records and the broken ones: {file name: what is wrong with it}."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"fs": 500, "leads": list(STANDARD_12)}
    for i, name in enumerate(GOOD):
        _npy(folder, name, synthesize(i, fs=500)[0], meta)
    ecg = synthesize(9, fs=500)[0]
    bad = {}
    # The cases of the issue.
    savemat(folder / "cpsc_plain_array.mat", {"ECG": ecg})
    bad["cpsc_plain_array.mat"] = "ECG"
    savemat(folder / "code15_1d.mat", {"feats": ecg[0]})
    bad["code15_1d.mat"] = "feats"
    _npy(folder, "fs_fast", ecg, {**meta, "fs": "fast"})
    bad["fs_fast.json"] = "sampling rate"
    # More of our own.
    savemat(folder / "cpsc_no_data.mat", {"ECG": {"sex": "Male", "age": 60}})
    bad["cpsc_no_data.mat"] = "data"
    (folder / "garbage.mat").write_bytes(os.urandom(300))
    bad["garbage.mat"] = "MATLAB"
    savemat(folder / "code15_bad_rate.mat", {"feats": ecg, "curr_sample_rate": "abc"})
    bad["code15_bad_rate.mat"] = "sampling rate"
    _npy(folder, "nan", np.where(np.arange(5000) == 7, np.nan, ecg).astype(np.float32), meta)
    bad["nan.npy"] = "NaN"
    _npy(folder, "few_samples", ecg[:, :1000], meta)
    bad["few_samples.npy"] = "shorter than"
    _npy(folder, "lead_count", ecg[:8], meta)
    bad["lead_count.npy"] = "shape"
    _npy(folder, "bad_json", ecg, "{not json")
    bad["bad_json.json"] = "sidecar"
    _npy(folder, "no_fs", ecg, {"leads": list(STANDARD_12)})
    bad["no_fs.json"] = "fs"
    _npy(folder, "zero_fs", ecg, {**meta, "fs": 0})
    bad["zero_fs.json"] = "sampling rate"
    _npy(folder, "low_fs", ecg, {**meta, "fs": 50})
    bad["low_fs.npy"] = "below"
    _npy(folder, "missing_leads", ecg[:3], {"fs": 500, "leads": ["I", "II", "III"]})
    bad["missing_leads.npy"] = "no lead V1"
    np.save(folder / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (folder / "objects.json").write_text(json.dumps(meta))
    bad["objects.npy"] = "unreadable array"
    _npy(folder, "leads_not_names", ecg, {"fs": 500, "leads": 12})
    bad["leads_not_names.json"] = "leads"
    _wfdb(folder, "empty_header", "", None)
    bad["empty_header.hea"] = "empty header"
    _wfdb(folder, "no_record_line", "# only a comment\n", None)
    bad["no_record_line.hea"] = "record line"
    _wfdb(folder, "missing_dat", "missing_dat 1 500 5000\nmissing_dat.dat 16 200/mV 16 0 0 0 0 I\n", None)
    bad["missing_dat.hea"] = "WFDB"
    _wfdb(folder, "truncated_dat", "truncated_dat 2 500 5000\ntruncated_dat.dat 16 200/mV 16 0 0 0 0 I\n"
          "truncated_dat.dat 16 200/mV 16 0 0 0 0 II\n", b"\x01\x00" * 100)
    bad["truncated_dat.hea"] = "WFDB|shorter|samples"
    return bad


def _failures(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _matches(failures: list[dict], bad: dict[str, str]) -> None:
    """Every broken record is listed once, naming its file and the problem."""
    import re

    assert len(failures) == len(bad), [f["reason"] for f in failures]
    for name, what in bad.items():
        stem = Path(name).stem
        hits = [f for f in failures if stem in f["reason"] or stem in f.get("path", "")]
        assert len(hits) == 1, (name, [f["reason"] for f in failures])
        assert stem in hits[0]["reason"], hits[0]  # the reason names the file
        assert re.search(what, hits[0]["reason"]), (name, hits[0]["reason"])


def test_prepare_data_lists_every_bad_record_and_keeps_the_good(tmp_path, capsys):
    bad = make_corpus(tmp_path / "src")
    code = main(["prepare-data", str(tmp_path / "src"), str(tmp_path / "out"), "--workers", "2"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert f"{len(GOOD)} records prepared, {len(bad)} failed" in out
    _matches(_failures(tmp_path / "out" / "failures.jsonl"), bad)
    manifest = [json.loads(line)["key"] for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert sorted(manifest) == sorted(f"{name}.npy" for name in GOOD)


def test_embed_on_a_raw_folder_goes_past_bad_records(tmp_path, capsys):
    bad = make_corpus(tmp_path / "src")
    enc = Encoder(EncoderConfig(dim=32, depth=1, num_heads=2))
    save_encoder(enc, tmp_path / "enc.pt")
    code = main(["embed", str(tmp_path / "enc.pt"), str(tmp_path / "src"), "--out", str(tmp_path / "e.npy")])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert np.load(tmp_path / "e.npy").shape == (len(GOOD), 32)
    assert sorted((tmp_path / "e.ids.txt").read_text().split()) == sorted(f"{name}.npy" for name in GOOD)
    assert f"{len(bad)} record(s) failed" in captured.out
    _matches(_failures(tmp_path / "e.failures.jsonl"), bad)


def test_killed_prepare_data_takes_its_workers_with_it(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(400):
        _npy(src, f"r{i}", np.random.default_rng(i).normal(size=(12, 5000)).astype(np.float32),
             {"fs": 500, "leads": list(STANDARD_12)})
    proc = subprocess.Popen([sys.executable, "-m", "ecg_jepa", "prepare-data", str(src), str(tmp_path / "out"),
                             "--workers", "2", "--shard-size", "50"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[int] = []
    for _ in range(200):  # wait until the pool's workers exist
        time.sleep(0.1)
        children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        if len(children) >= 2:
            break
    assert len(children) >= 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(Path(f"/proc/{c}").exists() and "Z" not in _state(c) for c in children):
        time.sleep(0.1)
    assert not [c for c in children if Path(f"/proc/{c}").exists() and "Z" not in _state(c)]


def _state(pid: int) -> str:
    try:
        return next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State"))
    except (OSError, StopIteration):
        return "Z"


def test_prepare_data_function_reports_counts(tmp_path):
    bad = make_corpus(tmp_path / "src")
    counts = prepare_data(tmp_path / "src", tmp_path / "out", workers=1, progress=False)
    assert counts == {"prepared": len(GOOD), "failed": len(bad), "skipped": 0, "retried": 0}
    assert torch.is_tensor(torch.as_tensor(np.load(tmp_path / "out" / "shard-00000.npy")))
