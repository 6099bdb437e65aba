"""Ops with many backends: CroPA attention (and, later, the fused patch embedding)."""
from .cropa import BACKENDS, cropa_attention, explain_backend

__all__ = ["BACKENDS", "cropa_attention", "explain_backend"]
