"""ECG data: the synthetic generator (and, later, readers for real formats and the shard cache)."""
from .synthetic import SyntheticECG, synthesize

__all__ = ["SyntheticECG", "synthesize"]
