"""Fixed facts of the ECG-JEPA input format, and the one way lead names are matched."""
from __future__ import annotations

from collections.abc import Sequence

LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
"""The 8 leads the model reads, in input-channel order (III, aVR, aVL, aVF are linear in I and II)."""

STANDARD_12: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
"""The standard 12 leads, in the usual order (CPSC2018, CODE-15, PTB-XL, the synthetic generator)."""

FS: int = 250
"""Sampling rate in Hz."""

N_SAMPLES: int = 2500
"""Samples per lead: 10 s at 250 Hz."""

PATCH: int = 50
"""Samples per patch (token)."""

N_SLOTS: int = N_SAMPLES // PATCH
"""Time slots (patches) per lead: 50."""

_ALIASES = {"MLII": "II", "MLI": "I", "MLIII": "III"}


def canonical_lead(name: str) -> str:
    """A lead name with case, spaces, dashes and a 'lead' prefix folded and aliases resolved:
    'aVR', 'AVR', 'avr' -> 'AVR'; 'MLII', 'lead II' -> 'II'."""
    key = str(name).strip().upper().replace("LEAD", "").replace(" ", "").replace("-", "")
    return _ALIASES.get(key, key)


def find_lead(name: str, available: Sequence[str]) -> int | None:
    """The index in ``available`` of the lead ``name`` (matched by :func:`canonical_lead`), or None."""
    key = canonical_lead(name)
    return next((i for i, have in enumerate(available) if canonical_lead(have) == key), None)
