"""From a :class:`Record` to the model's input: selected leads, the first 10 s, 250 Hz (FFT resampling,
as the paper does), optionally band-passed and z-scored."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import signal as sps

from ..constants import FS, LEADS, N_SAMPLES, canonical_lead
from .records import Record, RecordError

MIN_FS = 100.0
"""Below this sampling rate a QRS complex (~80–120 ms) spans too few samples to be resampled meaningfully."""

# Exact relations between limb leads (Einthoven / Goldberger): a missing lead can be derived from two others.
_DERIVED = {
    "I": (("II", 1.0), ("III", -1.0)),
    "II": (("I", 1.0), ("III", 1.0)),
    "III": (("II", 1.0), ("I", -1.0)),
    "AVR": (("I", -0.5), ("II", -0.5)),
    "AVL": (("I", 1.0), ("II", -0.5)),
    "AVF": (("II", 1.0), ("I", -0.5)),
}


def select_leads(record: Record, leads: Sequence[str] = LEADS, derive: bool = True) -> np.ndarray:
    """(len(leads), n) signal in the requested lead order; a missing limb lead is derived exactly from two
    others when ``derive`` (III = II − I, aVR = −(I + II)/2, ...), else it is an error."""
    index = {canonical_lead(name): i for i, name in enumerate(record.leads)}
    rows = []
    for lead in leads:
        key = canonical_lead(lead)
        if key in index:
            rows.append(record.signal[index[key]])
        elif derive and key in _DERIVED and all(src in index for src, _ in _DERIVED[key]):
            rows.append(sum(w * record.signal[index[src]] for src, w in _DERIVED[key]))
        else:
            raise RecordError(
                f"record {record.id} has no lead {lead} (it has {', '.join(record.leads)})"
                + ("" if derive else "; pass derive=True to derive limb leads from two others")
            )
    return np.stack(rows).astype(np.float32)


def bandpass(x: np.ndarray, fs: float, low: float = 0.67, high: float = 40.0, order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth band-pass along the last axis."""
    sos = sps.butter(order, [low, high], btype="bandpass", fs=fs, output="sos")
    return sps.sosfiltfilt(sos, x, axis=-1).astype(np.float32)


def prepare(
    record: Record,
    leads: Sequence[str] = LEADS,
    fs: int = FS,
    seconds: float = N_SAMPLES / FS,
    *,
    pad: bool = False,
    derive: bool = True,
    band_pass: bool = False,
    zscore: bool = False,
) -> np.ndarray:
    """Record -> (len(leads), fs·seconds) float32.

    Leads by name (case-insensitive, aliases folded), the first ``seconds`` of signal, FFT resampling
    (``scipy.signal.resample``) to ``fs``; optional 0.67–40 Hz band-pass and per-lead z-score (both off by
    default, as in the paper's pretraining). A record that is too short is an error unless ``pad`` (zeros
    at the end); NaN or infinite samples, and sampling rates below 100 Hz, are always errors.
    """
    if not record.fs >= MIN_FS:
        raise RecordError(
            f"record {record.id}: sampling rate {record.fs} Hz is below {MIN_FS:g} Hz, too low to resample to "
            f"{fs} Hz meaningfully (check the header's sampling frequency)"
        )
    x = select_leads(record, leads, derive)
    need = int(round(seconds * record.fs))
    if x.shape[1] < need:
        if not pad:
            raise RecordError(
                f"record {record.id} is {x.shape[1] / record.fs:.2f} s long, shorter than {seconds} s; "
                "pass pad=True (--pad) to zero-pad it"
            )
        x = np.pad(x, ((0, 0), (0, need - x.shape[1])))
    x = x[:, :need]
    if not np.isfinite(x).all():
        raise RecordError(f"record {record.id} holds NaN or infinite samples in its first {seconds} s")
    out_len = int(round(seconds * fs))
    if x.shape[1] != out_len:
        x = sps.resample(x, out_len, axis=1)
    if band_pass:
        x = bandpass(x, fs)
    if zscore:
        x = (x - x.mean(1, keepdims=True)) / np.maximum(x.std(1, keepdims=True), 1e-6)
    return np.ascontiguousarray(x, dtype=np.float32)
