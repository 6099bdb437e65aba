"""ECG-JEPA: self-supervised representation learning for 12-lead ECGs with fused CroPA attention.

Public API: the model (:class:`Encoder`, :class:`EncoderConfig`, :class:`JEPA`, :func:`load_encoder`,
:data:`LEADS`) and the ops (:func:`cropa_attention`, :class:`CroPAAttention`, :func:`explain_backend`, :func:`patch_embed`), whose
backends are a runtime setting (:func:`use_backend`, :func:`set_backend`).
"""
from .constants import LEADS
from .model.attention import CroPAAttention
from .model.checkpoint import load_encoder, save_encoder
from .model.encoder import Encoder, EncoderConfig
from .model.jepa import JEPA, PRESETS
from .ops.cropa import cropa_attention, explain_backend
from .ops.patch_embed import patch_embed
from .ops.setting import set_backend, use_backend

__all__ = [
    "LEADS",
    "CroPAAttention",
    "Encoder",
    "EncoderConfig",
    "JEPA",
    "PRESETS",
    "cropa_attention",
    "explain_backend",
    "load_encoder",
    "patch_embed",
    "save_encoder",
    "set_backend",
    "use_backend",
]
__version__ = "0.1.0"
