"""Realistic synthetic 12-lead ECGs, generated on the fly: the default data source of the main job.

A rotating cardiac dipole traces P, QRS and T loops (sums of Gaussian pulses along 3-D directions) at each
beat; leads are projections of it, the limb leads I and II from the frontal plane and III, aVR, aVL, aVF
derived exactly from them (III = II − I, ...), V1–V6 from the horizontal plane. Per record the electrical
axis, amplitudes, wave widths and QT (shortening with heart rate) vary; baseline wander, mains hum and
white noise are added. Amplitudes are in mV, 10 s at 250 Hz.

Labels a linear probe can learn: the heart-rate band (0: 40–60 bpm, 1: 60–100, 2: 100–150) and the rhythm
(0: regular sinus, 1: irregular, AF-like: no P waves, RR varying 15–25 %, fibrillatory waves);
``label = 2·band + irregular`` (6 classes).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ..constants import FS, LEADS, N_SAMPLES, STANDARD_12, find_lead
from ..errors import InputError

HR_BANDS: tuple[tuple[float, float], ...] = ((40.0, 60.0), (60.0, 100.0), (100.0, 150.0))
N_CLASSES = 2 * len(HR_BANDS)
CLASS_NAMES: tuple[str, ...] = tuple(
    f"{name} {rhythm}" for name in ("brady", "normal", "tachy") for rhythm in ("regular", "irregular")
)

# Waves: (name, offset from R in s at 60 bpm, width in s, amplitude in mV, direction (x: left, y: inferior, z: anterior)).
_WAVES = (
    ("P", -0.17, 0.025, 0.15, (0.6, 0.8, 0.2)),
    ("Q", -0.03, 0.010, -0.12, (0.7, 0.5, -0.5)),
    ("R", 0.00, 0.012, 1.20, (0.6, 0.7, -0.4)),
    ("S", 0.03, 0.012, -0.35, (-0.3, -0.4, 0.85)),
    ("T", 0.28, 0.060, 0.30, (0.6, 0.6, 0.5)),
)
# Precordial electrodes: angle in the horizontal plane (0° = patient's left), and anterior weight.
_PRECORDIAL_DEG = (115.0, 94.0, 78.0, 60.0, 30.0, 0.0)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A random rotation of up to ~25° about each axis: the record's electrical axis."""
    a, b, c = np.deg2rad(rng.uniform(-25, 25, size=3))
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _beat_times(rng: np.random.Generator, hr: float, irregular: bool, seconds: float) -> np.ndarray:
    mean_rr = 60.0 / hr
    cv = rng.uniform(0.15, 0.25) if irregular else rng.uniform(0.01, 0.03)
    t, times = rng.uniform(-mean_rr, 0.0), []
    while t < seconds + mean_rr:
        times.append(t)
        t += max(0.25, mean_rr * (1.0 + cv * rng.standard_normal()))
    return np.asarray(times)


def synthesize(seed: int, fs: int = FS, seconds: float = N_SAMPLES / FS) -> tuple[np.ndarray, int]:
    """One record: ((12, fs·seconds) float32 in mV, leads :data:`~ecg_jepa.constants.STANDARD_12`; label in [0, 6))."""
    rng = np.random.default_rng(seed)
    band = int(rng.integers(len(HR_BANDS)))
    irregular = bool(rng.integers(2))
    hr = rng.uniform(*HR_BANDS[band])
    n = int(round(fs * seconds))
    t = np.arange(n) / fs
    beats = _beat_times(rng, hr, irregular, seconds)
    qt_scale = np.sqrt(60.0 / hr)  # Bazett: QT grows with sqrt(RR)
    rot = _rotation(rng)
    dipole = np.zeros((3, n))
    for name, offset, width, amp, direction in _WAVES:
        if name == "P" and irregular:
            continue
        stretch = qt_scale if name == "T" else (0.8 + 0.2 * qt_scale if name == "P" else 1.0)
        w = width * rng.uniform(0.85, 1.15) * (stretch if name == "T" else 1.0)
        a = amp * rng.uniform(0.7, 1.3)
        centers = beats + offset * stretch + rng.normal(0, 0.003, size=beats.size)
        pulse = np.exp(-0.5 * ((t[None, :] - centers[:, None]) / w) ** 2).sum(0)
        dipole += a * (rot @ np.asarray(direction))[:, None] * pulse[None, :]
    if irregular:  # fibrillatory waves, mostly seen in V1 and inferior leads
        f = rng.uniform(4.0, 8.0)
        dipole += 0.04 * np.array([[0.2], [0.6], [0.8]]) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    x, y, z = dipole
    lead_i = x
    lead_ii = 0.5 * x + 0.866 * y
    limb = [lead_i, lead_ii, lead_ii - lead_i, -(lead_i + lead_ii) / 2, lead_i - lead_ii / 2, lead_ii - lead_i / 2]
    chest = [
        np.cos(np.deg2rad(d)) * x + 0.8 * np.sin(np.deg2rad(d)) * z + 0.1 * y for d in _PRECORDIAL_DEG
    ]
    signal = np.stack(limb + chest)
    wander = sum(
        rng.uniform(0.02, 0.1) * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t + rng.uniform(0, 2 * np.pi))
        for _ in range(2)
    )
    mains = 0.01 * rng.uniform() * np.sin(2 * np.pi * rng.choice([50.0, 60.0]) * t)
    signal = signal + wander + mains + rng.normal(0, 0.015, size=signal.shape)
    return signal.astype(np.float32), 2 * band + int(irregular)


class SyntheticECG(Dataset):
    """``n`` synthetic ECGs: item i is ``(x, label)`` with x (len(leads), 2500) float32 in mV for the given
    lead names (default :data:`ecg_jepa.LEADS`), the same for the same (seed, i) in every process."""

    def __init__(self, n: int, seed: int = 0, leads: tuple[str, ...] = LEADS) -> None:
        self.n, self.seed = n, seed
        self.rows = [find_lead(name, STANDARD_12) for name in leads]
        if None in self.rows:
            raise InputError(f"unknown lead in {leads}; synthetic ECGs have {', '.join(STANDARD_12)}")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} records")
        signal, label = synthesize(self.seed * 1_000_003 + i)
        return torch.from_numpy(signal[self.rows]), label
