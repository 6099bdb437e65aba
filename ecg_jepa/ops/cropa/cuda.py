"""The ``cuda`` CroPA backend: the ``csrc/`` extension's ``ecg_jepa::cropa_cuda_fwd`` / ``_bwd`` ops,
loaded ahead of time (``ecg_jepa._C``) or built just in time on first use, completed with the same fake
implementation and autograd as every fused backend (:mod:`.fused`)."""
from __future__ import annotations

import torch

from ... import build_ext
from .fused import register

_ops: dict = {}


def _attention():
    if "attention" not in _ops:
        build_ext.load()
        _ops["attention"], _ops["fwd"], _ops["bwd"] = register("cuda")
    return _ops["attention"]


def ops():
    """(fwd op, bwd op), loading the extension first."""
    _attention()
    return _ops["fwd"], _ops["bwd"]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_leads: int, scale: float) -> torch.Tensor:
    """(B, H, N, d) -> (B, H, N, d) through the CUDA extension."""
    return _attention()(q, k, v, n_leads, scale)
