"""Reading ECG records from real formats into one :class:`Record`.

Formats: WFDB (``.hea`` + ``.dat``; the PhysioNet/CinC Challenge 2020/21 ``.hea`` + ``.mat`` form, LUDB,
PTB, PTB-XL records100/records500 files), CPSC2018 ``.mat`` (struct ``ECG``), CODE-15 ``.mat`` exams
(``feats``), and ``.npy`` arrays with a ``.json`` sidecar (``{"fs": ..., "leads": [...], "labels": {...}}``).
WFDB parsing is ``wfdb``'s, MATLAB files are ``scipy.io``'s; what is done here is picking the reader,
converting units to mV and collecting labels. Headers that wfdb refuses or misreads (a record line that
names ``E00666.mat``, a ``23-Mar-2021`` date) are read through a sanitized copy, keeping the metadata.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..constants import STANDARD_12
from ..errors import InputError

_UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "v": 1e3, "nu": None}
_WFDB_DATE = re.compile(r"^\d{2}/\d{2}/\d{4}$")


class RecordError(InputError):
    """A record that cannot be read: the message names the file and the problem."""


@dataclass
class Record:
    """One ECG: ``signal`` (n_leads, n_samples) float32 in mV, ``fs`` in Hz, lead ``leads`` names as the
    file gives them, and whatever labels/metadata the file carries (``labels``: e.g. ``dx`` SNOMED codes,
    ``age``, ``sex``, ``diagnoses``, ``strat_fold``)."""

    id: str
    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    source: str
    labels: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.signal.shape[1] / self.fs


def read_record(path: str | os.PathLike) -> Record:
    """Read one record. ``path`` may name the header, the data file or the record without extension.
    Whatever is wrong with the file is a :class:`RecordError` that names it."""
    path = Path(path)
    try:
        return _read_any(path)
    except RecordError:
        raise
    except Exception as e:  # a malformed file of a known format (its reader failed in an unforeseen way)
        raise RecordError(f"{path}: malformed record ({type(e).__name__}: {str(e)[:200]})") from None


def _rate(value, source: Path) -> float:
    """A sampling rate in Hz from a header or sidecar value, or a RecordError naming the file."""
    try:
        fs = float(np.ravel(value)[0]) if not isinstance(value, (int, float, str)) else float(value)
    except (TypeError, ValueError, IndexError):
        raise RecordError(f"{source}: sampling rate must be a number of Hz, got {value!r}") from None
    if not np.isfinite(fs) or fs <= 0:
        raise RecordError(f"{source}: sampling rate must be a positive number of Hz, got {value!r}")
    return fs


def _matrix(value, rows: int, what: str, source: Path) -> np.ndarray:
    """A (rows, n) float32 signal, or a RecordError naming the file and the shape found."""
    try:
        signal = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise RecordError(f"{source}: {what} is not a numeric array") from None
    if signal.ndim != 2 or signal.shape[0] != rows or signal.shape[1] < 1:
        raise RecordError(f"{source}: {what} has shape {signal.shape}, expected ({rows}, samples)")
    return signal


def _read_any(path: Path) -> Record:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _read_npy(path)
    if suffix == ".mat" and not path.with_suffix(".hea").exists():
        return _read_mat(path)
    header = path.with_suffix(".hea") if suffix in (".hea", ".dat", ".mat", "") or not path.exists() else None
    if header is not None and header.exists():
        return _read_wfdb(header)
    if suffix == ".dat" and path.exists():
        raise RecordError(f"{path}: a WFDB signal file without its header {header.name} (sampling rate, leads and "
                          "gains are in the header)")
    if not path.exists() and not (header and header.exists()):
        raise RecordError(f"{path}: no such record (looked for the file and for {path.with_suffix('.hea').name})")
    raise RecordError(f"{path}: unknown ECG format '{suffix}' (readable: WFDB .hea/.dat/.mat, CPSC/CODE-15 .mat, .npy)")


def _to_mv(signal: np.ndarray, units: list[str], path: Path) -> np.ndarray:
    scale = []
    for unit in units:
        factor = _UNIT_TO_MV.get((unit or "mV").strip().lower(), "unknown")
        if factor is None or factor == "unknown":
            raise RecordError(f"{path}: signal unit {unit!r} is not a voltage; cannot convert to mV")
        scale.append(factor)
    return (signal * np.asarray(scale, dtype=np.float64)[:, None]).astype(np.float32)


def _parse_comments(comments: list[str]) -> dict:
    """Challenge (``Dx: a,b``, ``Age: 77``, ``Sex: Male``), LUDB (``<age>: 51``, ``<diagnoses>:`` then one
    per line) and PTB (``age: 81``) header comments -> labels."""
    labels: dict = {}
    diagnoses: list[str] = []
    in_diagnoses = False
    for line in comments:
        key, sep, value = line.partition(":")
        key = key.strip().strip("<>").lower()
        value = value.strip()
        if in_diagnoses and not (sep and key in ("age", "sex", "dx")):
            diagnoses.append(line.strip())
            continue
        if key == "dx" and value:
            labels["dx"] = [code.strip() for code in value.split(",") if code.strip()]
        elif key == "age":
            try:
                labels["age"] = float(value)
            except ValueError:
                labels["age"] = None
        elif key == "sex":
            labels["sex"] = value
        elif key == "diagnoses":
            in_diagnoses = True
    if diagnoses:
        labels["diagnoses"] = diagnoses
    return labels


BYTES_PER_SAMPLE = {"8": 1, "16": 2, "61": 2, "80": 1, "160": 2, "24": 3, "32": 4, "212": 1.5}
"""Bytes per sample of the WFDB signal formats with a fixed sample size."""


def _short_signal_file(header: Path, text: str) -> str | None:
    """Why the signal files a header names are too short for it (empty, or fewer bytes than its sample count
    needs), or None when they are not (or the header does not say enough to tell)."""
    lines = [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    try:
        n_samples = int(lines[0][3])
    except (IndexError, ValueError):
        return None
    per_file: dict[str, float] = {}
    for fields in lines[1:]:
        if len(fields) < 2:
            continue
        fmt = fields[1].split("x")[0].split(":")[0].split("+")[0]
        if fmt not in BYTES_PER_SAMPLE:
            return None
        per_file[fields[0]] = per_file.get(fields[0], 0) + BYTES_PER_SAMPLE[fmt]
    for name, width in per_file.items():
        path = header.parent / name
        if path.exists() and path.stat().st_size < n_samples * width:
            size = path.stat().st_size
            return (f"the signal file {name} is empty" if size == 0 else
                    f"the signal file {name} is shorter than its header declares ({size:,} bytes, "
                    f"{int(n_samples * width):,} needed for {n_samples:,} samples)")
    return None


def _sanitized_header(header: Path, text: str) -> tuple[str, dict] | None:
    """A header text wfdb reads correctly, plus the metadata moved out of it; None if it needs no fix."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    fields = lines[first].split()
    meta: dict = {}
    changed = False
    name = fields[0].split("/")[0]
    if Path(name).suffix.lower() in (".mat", ".dat", ".hea"):  # e.g. 'E00666.mat 12 500 5000 ...'
        fields[0] = fields[0].replace(name, Path(name).stem)
        changed = True
    for i, value in enumerate(fields[4:], start=4):  # base time then base date
        if re.fullmatch(r"\d{1,2}-[A-Za-z]{3}-\d{4}", value):  # e.g. '23-Mar-2021', not WFDB's DD/MM/YYYY
            meta["date"] = dt.datetime.strptime(value, "%d-%b-%Y").date().isoformat()
            fields = fields[:i] + fields[i + 1:]
            changed = True
            break
    if len(fields) > 4 and ":" in fields[4]:
        meta["time"] = fields[4]
    if not changed:
        return None
    lines[first] = " ".join(fields)
    return "\n".join(lines) + "\n", meta


def _read_wfdb(header: Path) -> Record:
    import wfdb

    try:
        text = header.read_text(errors="replace")
    except OSError as e:
        raise RecordError(f"{header}: cannot read the header: {e}") from None
    if not text.strip():
        raise RecordError(f"{header}: empty header file")
    try:
        fix = _sanitized_header(header, text)
    except StopIteration:
        raise RecordError(f"{header}: header has no record line") from None
    try:
        if fix is None:
            rec = wfdb.rdrecord(str(header.with_suffix("")))
            meta = {}
        else:
            sanitized, meta = fix
            with tempfile.TemporaryDirectory() as tmp:
                copy = Path(tmp) / header.name
                copy.write_text(sanitized)
                for data in {line.split()[0] for line in sanitized.splitlines()[1:] if line and not line.startswith("#")}:
                    target = header.parent / data
                    if target.exists():
                        os.symlink(target.resolve(), Path(tmp) / data)
                rec = wfdb.rdrecord(str(copy.with_suffix("")))
    except Exception as e:  # wfdb raises many types for malformed or truncated files
        short = _short_signal_file(header, text)
        if short:
            raise RecordError(f"{header}: {short}") from None
        raise RecordError(f"{header}: unreadable WFDB record ({type(e).__name__}: {e})") from None
    if rec.p_signal is None:
        raise RecordError(f"{header}: WFDB record has no signal")
    signal = _to_mv(rec.p_signal.T, rec.units or ["mV"] * rec.n_sig, header)
    if rec.base_date is not None:
        meta.setdefault("date", rec.base_date.isoformat())
    labels = {**_parse_comments(rec.comments or []), **meta}
    return Record(header.stem, signal, float(rec.fs), tuple(rec.sig_name), "wfdb", labels)


def _read_mat(path: Path) -> Record:
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except Exception as e:
        raise RecordError(f"{path}: unreadable MATLAB file ({type(e).__name__}: {e})") from None
    if "ECG" in mat:  # CPSC2018: struct with sex, age, data (12, N) in mV at 500 Hz
        ecg = mat["ECG"]
        if ecg.dtype.names is None or "data" not in ecg.dtype.names or ecg.size < 1:
            raise RecordError(f"{path}: 'ECG' is not a CPSC2018 struct with a 'data' field (got a {ecg.dtype} "
                              f"array of shape {ecg.shape})")
        ecg = ecg.flat[0]
        labels = {}
        for key, cast in (("sex", str), ("age", float)):
            if key in ecg.dtype.names and np.size(ecg[key]):
                try:
                    labels[key] = cast(np.ravel(ecg[key])[0])
                except (TypeError, ValueError):
                    labels[key] = None
        return Record(path.stem, _matrix(ecg["data"], 12, "ECG.data", path), 500.0, STANDARD_12, "cpsc2018", labels)
    if "feats" in mat:  # CODE-15 exam: feats (12, N) in mV at org_sample_rate (400 Hz)
        fs = _rate(mat.get("curr_sample_rate", mat.get("org_sample_rate", 400)), path)
        labels = {"idx": int(np.ravel(mat["idx"])[0])} if "idx" in mat and np.size(mat["idx"]) else {}
        return Record(path.stem, _matrix(mat["feats"], 12, "feats", path), fs, STANDARD_12, "code15", labels)
    if "val" in mat:
        raise RecordError(f"{path}: a Challenge-style .mat needs its .hea header beside it (gains, fs, leads)")
    raise RecordError(f"{path}: MATLAB file holds none of the known ECG layouts (ECG struct, feats, val)")


def _read_npy(path: Path) -> Record:
    sidecar = path.with_suffix(".json")
    if not sidecar.exists():
        raise RecordError(f"{path}: a .npy ECG needs a sidecar {sidecar.name} with its fs and leads")
    try:
        info = json.loads(sidecar.read_text())
    except (ValueError, OSError) as e:
        raise RecordError(f"{sidecar}: unreadable sidecar ({e})") from None
    if not isinstance(info, dict):
        raise RecordError(f"{sidecar}: the sidecar must be a JSON object with 'fs' and 'leads'")
    try:
        signal = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise RecordError(f"{path}: unreadable array ({e})") from None
    leads = info.get("leads", ())
    if not isinstance(leads, list) or not all(isinstance(name, str) for name in leads):
        raise RecordError(f"{sidecar}: 'leads' must be a list of lead names, got {leads!r}")
    if "fs" not in info:
        raise RecordError(f"{sidecar}: missing 'fs' (sampling rate in Hz)")
    fs = _rate(info["fs"], sidecar)
    labels = info.get("labels", {})
    if not isinstance(labels, dict):
        raise RecordError(f"{sidecar}: 'labels' must be a JSON object, got {labels!r}")
    return Record(path.stem, _matrix(signal, len(leads), "the array", path), fs, tuple(leads), "npy", dict(labels))
