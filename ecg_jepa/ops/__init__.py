"""Ops with many backends: CroPA attention and the fused patch embedding."""
from .cropa import BACKENDS, cropa_attention, explain_backend
from .patch_embed import patch_embed

__all__ = ["BACKENDS", "cropa_attention", "explain_backend", "patch_embed"]
