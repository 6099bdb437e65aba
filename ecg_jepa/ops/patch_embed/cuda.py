"""The ``cuda`` patch-embedding backend: the ``csrc/`` extension's ``ecg_jepa::patch_embed_cuda`` /
``_dx`` ops, completed with the shared fake implementation and autograd (:mod:`.fused`)."""
from __future__ import annotations

import torch

from ... import build_ext
from .fused import register

_ops: dict = {}


def ops():
    """(forward op, dx op), loading the extension first."""
    if "fwd" not in _ops:
        build_ext.load()
        _ops["fwd"], _ops["dx"] = register("cuda")
    return _ops["fwd"], _ops["dx"]


def embed(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, pos: torch.Tensor, vis: torch.Tensor,
          lead_ids: torch.Tensor) -> torch.Tensor:
    return ops()[0](x, weight, bias, pos, vis, lead_ids)
