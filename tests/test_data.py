"""Data: readers for real formats, preprocessing from first principles, shards, resume, clear errors."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA
from torch.utils.data import DataLoader

from ecg_jepa.constants import STANDARD_12
from ecg_jepa.data import (
    PrepareOptions,
    Record,
    RecordError,
    ShardDataset,
    find_records,
    load_item,
    prepare,
    prepare_data,
    read_record,
)

wfdb = pytest.importorskip("wfdb")  # the reader of WFDB records (not in every GPU image)

DATA = Path(SHARED_DATA)
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is absent")


def sine_record(fs=500.0, seconds=10.0, freq=5.0, leads=STANDARD_12) -> Record:
    t = np.arange(int(fs * seconds)) / fs
    signal = np.stack([(i + 1) * np.sin(2 * np.pi * freq * t) for i in range(len(leads))]).astype(np.float32)
    return Record("sine", signal, fs, tuple(leads), "test")


def test_prepare_resamples_a_sine_exactly():
    x = prepare(sine_record(fs=500.0, freq=5.0))
    t = np.arange(2500) / 250.0
    assert x.shape == (8, 2500) and x.dtype == np.float32
    # Lead order: I, II, V1..V6 are rows 0, 1, 6..11 of the standard 12 (amplitudes 1, 2, 7..12).
    for row, amp in enumerate([1, 2, 7, 8, 9, 10, 11, 12]):
        assert np.abs(x[row] - amp * np.sin(2 * np.pi * 5 * t)).max() < 1e-3 * amp


def test_prepare_keeps_the_first_seconds_and_pads_on_request():
    rec = sine_record(fs=250.0, seconds=12.0)
    rec.signal[:, 2500:] = 99.0  # beyond 10 s: must be dropped
    assert prepare(rec).max() < 20
    short = sine_record(fs=250.0, seconds=7.3)
    with pytest.raises(RecordError, match="shorter than 10.0 s.*pad"):
        prepare(short)
    padded = prepare(short, pad=True)
    assert (padded[:, 1825:] == 0).all() and np.abs(padded[:, :1825]).max() > 0.5


def test_lead_aliases_and_exact_derivation():
    rec = sine_record(leads=("i", "ii", "iii", "AVR", "avl", "aVF", "v1", "v2", "v3", "v4", "v5", "v6"))
    x = prepare(rec, leads=("aVR", "V6", "I"))
    assert np.allclose(x[0], prepare(rec, leads=("AVR",))[0]) and np.allclose(x[2], prepare(rec, leads=("I",))[0])
    limb = Record("limb", rec.signal[:2], rec.fs, ("I", "II"), "test")
    derived = prepare(limb, leads=("III", "aVR", "aVL", "aVF"))
    i, ii = prepare(limb, leads=("I", "II"))
    assert np.allclose(derived, np.stack([ii - i, -(i + ii) / 2, i - ii / 2, ii - i / 2]), atol=1e-6)
    with pytest.raises(RecordError, match="no lead V1"):
        prepare(limb, leads=("V1",))
    with pytest.raises(RecordError, match="no lead III.*derive"):
        prepare(limb, leads=("III",), derive=False)


def test_nan_and_bad_rate_are_errors():
    rec = sine_record()
    rec.signal[3, 100] = np.nan
    with pytest.raises(RecordError, match="NaN"):
        prepare(rec, leads=STANDARD_12)
    for fs in (0, 50.0):
        rec = sine_record()
        rec.fs = fs
        with pytest.raises(RecordError, match="sampling rate .* below 100 Hz"):
            prepare(rec)


def test_band_pass_and_zscore():
    rec = sine_record(freq=10.0)
    rec.signal += 5.0  # a DC offset the band-pass removes
    x = prepare(rec, band_pass=True, zscore=True)
    assert np.abs(x.mean(1)).max() < 1e-4 and np.allclose(x.std(1), 1.0, atol=1e-3)
    assert np.abs(prepare(rec, band_pass=True)[:, 500:-500].mean(1)).max() < 0.05


def test_wfdb_round_trip(tmp_path, seed):
    rng = np.random.default_rng(seed)
    signal = rng.normal(0, 0.5, size=(5000, 12))
    wfdb.wrsamp("rt", fs=500, units=["mV"] * 12, sig_name=list(STANDARD_12), p_signal=signal, fmt=["16"] * 12,
                write_dir=str(tmp_path), comments=["Age: 60", "Sex: Male", "Dx: 426783006,164934002"])
    rec = read_record(tmp_path / "rt.hea")
    assert rec.fs == 500 and rec.leads == STANDARD_12 and rec.labels["dx"] == ["426783006", "164934002"]
    assert rec.labels["age"] == 60 and np.abs(rec.signal - signal.T).max() < 1e-3  # 16-bit quantization


def test_microvolt_units_are_converted(tmp_path):
    signal = np.tile(np.array([[1000.0, -2000.0]]), (100, 1))
    wfdb.wrsamp("uv", fs=100, units=["uV", "uV"], sig_name=["I", "II"], p_signal=signal, fmt=["16", "16"],
                write_dir=str(tmp_path))
    assert np.allclose(read_record(tmp_path / "uv.hea").signal[:, 0], [1.0, -2.0], atol=1e-3)


def test_malformed_truncated_and_empty_files(tmp_path):
    (tmp_path / "empty.hea").write_text("")
    with pytest.raises(RecordError, match="empty header"):
        read_record(tmp_path / "empty.hea")
    (tmp_path / "junk.hea").write_text("this is not a header\n")
    with pytest.raises(RecordError, match="unreadable WFDB"):
        read_record(tmp_path / "junk.hea")
    wfdb.wrsamp("cut", fs=100, units=["mV"], sig_name=["I"], p_signal=np.zeros((1000, 1)), fmt=["16"],
                write_dir=str(tmp_path))
    data = tmp_path / "cut.dat"
    data.write_bytes(data.read_bytes()[:500])
    with pytest.raises(RecordError, match=r"cut.hea: the signal file cut.dat is shorter than its header declares "
                                          r"\(500 bytes, 2,000 needed for 1,000 samples\)"):
        read_record(tmp_path / "cut.hea")
    data.write_bytes(b"")
    with pytest.raises(RecordError, match="the signal file cut.dat is empty"):
        read_record(tmp_path / "cut.hea")
    (tmp_path / "lone.dat").write_bytes(b"")  # a signal file without a header: listed as a failure, not ignored
    with pytest.raises(RecordError, match="lone.dat: a WFDB signal file without its header lone.hea"):
        read_record(tmp_path / "lone.dat")
    assert "lone.dat" in {item.key for item in find_records(tmp_path)}
    (tmp_path / "x.mat").write_bytes(b"garbage")
    with pytest.raises(RecordError, match="unreadable MATLAB"):
        read_record(tmp_path / "x.mat")
    with pytest.raises(RecordError, match="no such record"):
        read_record(tmp_path / "absent.hea")
    np.save(tmp_path / "a.npy", np.zeros((2, 10)))
    with pytest.raises(RecordError, match="sidecar"):
        read_record(tmp_path / "a.npy")


def test_npy_with_sidecar(tmp_path):
    np.save(tmp_path / "e.npy", np.ones((2, 3000), dtype=np.float32))
    (tmp_path / "e.json").write_text(json.dumps({"fs": 300, "leads": ["II", "I"], "labels": {"af": 1}}))
    rec = read_record(tmp_path / "e.npy")
    assert rec.fs == 300 and rec.leads == ("II", "I") and rec.labels == {"af": 1}


@needs_data
def test_every_shared_record_reads():
    count = 0
    for folder in ("ludb", "cinc2021-samples", "code15-samples", "cpsc2018-samples", "fixtures"):
        for item in find_records(DATA / folder):
            rec = load_item(item)
            assert rec.signal.ndim == 2 and rec.signal.shape[0] == len(rec.leads) and rec.fs > 0
            assert np.isfinite(rec.signal).all() and 0.005 < rec.signal.std() < 5, item.key  # plausible mV
            count += 1
    assert count == 150 + 37 + 10 + 10 + 2


@needs_data
def test_challenge_header_quirks():
    with pytest.raises(Exception):  # wfdb itself refuses E00666's record line
        wfdb.rdheader(str(DATA / "cinc2021-samples/records/E00666"))
    e = read_record(DATA / "cinc2021-samples/records/E00666.hea")
    assert e.signal.shape == (12, 5000) and e.fs == 500 and e.labels["date"] == "2020-05-05"
    assert e.labels["time"] == "14:50:55" and "164934002" in e.labels["dx"]
    js = read_record(DATA / "cinc2021-samples/records/JS00666.hea")
    assert js.labels["date"] == "2021-03-23" and js.labels["time"] == "20:59:55"  # wfdb alone misreads both
    plain = wfdb.rdrecord(str(DATA / "cinc2021-samples/records/JS00666"))
    assert np.allclose(js.signal, plain.p_signal.T, atol=1e-6)


@needs_data
def test_labels_come_along():
    cpsc = load_item(next(i for i in find_records(DATA / "cpsc2018-samples") if i.key == "A1988.mat"))
    assert cpsc.labels["IAVB"] == 1 and cpsc.labels["sex"] == "Female"
    ptbxl = find_records(DATA / "ptbxl-processed")
    first = load_item(ptbxl[0])
    assert len(ptbxl) == 1442 and first.fs == 250 and first.signal.shape == (12, 2500)
    assert {"NORM", "MI", "strat_fold"} <= set(first.labels)
    code15 = [load_item(i) for i in find_records(DATA / "code15-samples")]
    assert all("RBBB" in r.labels for r in code15)


def test_shards_round_trip_resume_and_failures(tmp_path, seed):
    rng = np.random.default_rng(seed)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(7):
        secs = 4 if i == 3 else 10  # one too short: must be reported, not silently dropped
        wfdb.wrsamp(f"r{i}", fs=500, units=["mV"] * 12, sig_name=list(STANDARD_12),
                    p_signal=rng.normal(0, 0.3, size=(500 * secs, 12)), fmt=["16"] * 12, write_dir=str(src))
    out = tmp_path / "out"
    counts = prepare_data(src, out, workers=2, shard_size=3, progress=False)
    assert counts == {"prepared": 6, "failed": 1, "skipped": 0, "retried": 0}
    failures = [json.loads(line) for line in open(out / "failures.jsonl")]
    assert failures[0]["key"] == "r3.hea" and "shorter than" in failures[0]["reason"]
    ds = ShardDataset(out)
    assert len(ds) == 6 and sorted(r["id"] for r in ds.records) == ["r0", "r1", "r2", "r4", "r5", "r6"]
    for i, rec in enumerate(ds.records):
        expect = prepare(read_record(src / f"{rec['id']}.hea"))
        assert np.abs(ds[i][0].numpy() - expect).max() < 2e-3  # float16 storage
    # Interrupted run: a shard written but not in the manifest is a leftover, re-done on the next run.
    (out / "manifest.jsonl").write_text("".join(open(out / "manifest.jsonl").readlines()[:3]) + '{"key": "r4')
    again = prepare_data(src, out, workers=1, shard_size=3, progress=False)
    assert again == {"prepared": 3, "failed": 1, "skipped": 3, "retried": 1}  # r3 tried again, still too short
    assert len(ShardDataset(out)) == 6
    # A failed record that was fixed is prepared on the next run (earlier failures were never retried).
    wfdb.wrsamp("r3", fs=500, units=["mV"] * 12, sig_name=list(STANDARD_12),
                p_signal=rng.normal(0, 0.3, size=(5000, 12)), fmt=["16"] * 12, write_dir=str(src))
    fixed = prepare_data(src, out, workers=1, shard_size=3, progress=False)
    assert fixed == {"prepared": 1, "failed": 0, "skipped": 6, "retried": 1}
    assert len(ShardDataset(out)) == 7 and (out / "failures.jsonl").read_text() == ""
    with pytest.raises(ValueError, match="other options"):
        prepare_data(src, out, PrepareOptions(zscore=True), workers=1, progress=False)


def test_shard_dataset_with_workers_and_batches(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(10):
        np.save(src / f"e{i}.npy", np.full((8, 2500), float(i), dtype=np.float32))
        (src / f"e{i}.json").write_text(json.dumps({"fs": 250, "leads": ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]}))
    prepare_data(src, tmp_path / "out", workers=1, shard_size=4, progress=False)
    ds = ShardDataset(tmp_path / "out")
    loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=2)
    seen = {}
    for x, idx in loader:
        for row, i in zip(x, idx.tolist()):
            seen[i] = float(row[0, 0])
    assert sorted(seen) == list(range(10))
    assert all(seen[i] == float(ds.records[i]["id"][1:]) for i in seen)


def test_missing_shards_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare-data"):
        ShardDataset(tmp_path)


@needs_data
def test_ptbxl_tree_with_database_csv(tmp_path):
    """A PTB-XL layout (records100/... + ptbxl_database.csv) built around the real record 00001_lr."""
    folder = tmp_path / "records100" / "00000"
    folder.mkdir(parents=True)
    for suffix in (".hea", ".dat"):
        shutil.copy(DATA / "fixtures" / "ptbxl" / f"00001_lr{suffix}", folder)
    (tmp_path / "ptbxl_database.csv").write_text(
        "ecg_id,patient_id,age,sex,scp_codes,strat_fold,filename_lr,filename_hr\n"
        "1,15709.0,56.0,1,\"{'NORM': 100.0, 'SR': 0.0}\",3,records100/00000/00001_lr,records500/00000/00001_hr\n"
    )
    (item,) = find_records(tmp_path)
    rec = load_item(item)
    assert item.key == "ptbxl:1" and rec.fs == 100 and rec.signal.shape == (12, 1000)
    assert rec.labels["scp_codes"] == {"NORM": 100.0, "SR": 0.0} and rec.labels["strat_fold"] == 3
    assert prepare(rec).shape == (8, 2500)
