"""Ops with many backends, below the model (nothing here imports :mod:`ecg_jepa.model`): the token layout
(:mod:`.layout`), the shared registry and dispatcher (:mod:`.registry`), the tolerance rule
(:mod:`.parity`), the runtime backend setting (:mod:`.setting`), and one package per op: :mod:`.cropa` (CroPA
attention) and :mod:`.patch_embed`."""
from .cropa import BACKENDS, cropa_attention, explain_backend
from .patch_embed import patch_embed
from .setting import set_backend, use_backend

__all__ = ["BACKENDS", "cropa_attention", "explain_backend", "patch_embed", "set_backend", "use_backend"]
