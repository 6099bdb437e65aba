"""Fixed facts of the ECG-JEPA input format."""

LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
"""The 8 leads the model reads, in input-channel order (III, aVR, aVL, aVF are linear in I and II)."""

FS: int = 250
"""Sampling rate in Hz."""

N_SAMPLES: int = 2500
"""Samples per lead: 10 s at 250 Hz."""

PATCH: int = 50
"""Samples per patch (token)."""

N_SLOTS: int = N_SAMPLES // PATCH
"""Time slots (patches) per lead: 50."""
