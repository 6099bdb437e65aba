"""The ``reference`` patch embedding (the eager twin every other backend is checked against) and the
weight gradients every fused backend shares."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..layout import take_slots


def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, pos: torch.Tensor, vis: torch.Tensor,
              lead_ids: torch.Tensor) -> torch.Tensor:
    """Plain torch: reshape into patches, keep the visible slots, Linear + bias, add the position rows.
    Shapes as :func:`ecg_jepa.ops.patch_embed.patch_embed`'s, with vis (1 or B, T_vis) and lead_ids (L,)."""
    b, n_leads, samples = x.shape
    dim, patch = weight.shape
    t_all = samples // patch
    patches = take_slots(x.reshape(b, n_leads, t_all, patch), vis)
    rows = take_slots(pos.reshape(-1, t_all, dim)[lead_ids.long()][None], vis)
    return (F.linear(patches, weight, bias) + rows.to(x.dtype)).flatten(1, 2)


def weight_grads(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, vis: torch.Tensor):
    """(dW, db) of the embedding: reductions over every visible token, one GEMM over the gathered patches
    (the fused kernels compute the forward and dx)."""
    dim, patch = weight.shape
    b, n_leads, samples = x.shape
    patches = take_slots(x.reshape(b, n_leads, samples // patch, patch), vis.long()).reshape(-1, patch)
    flat = grad.reshape(-1, dim)
    return flat.t().mm(patches.to(flat.dtype)), flat.sum(0)
