"""``patch_embed``: raw ECG -> visible tokens (patches, Linear, bias, position rows) in one op."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..model.masks import check_slot_mask, slot_indices, take_slots
from . import _cuda_backend
from .dispatch import Backend, Dispatcher, can_always, needs_grad, triton_why_not


def reference(x, weight, bias, pos, vis, lead_ids):
    """Plain torch: reshape into patches, keep the visible slots, Linear + bias, add the position rows."""
    b, n_leads, samples = x.shape
    dim, patch = weight.shape
    t_all = samples // patch
    patches = take_slots(x.reshape(b, n_leads, t_all, patch), vis)
    rows = take_slots(pos.reshape(-1, t_all, dim)[lead_ids.long()][None], vis)
    return (F.linear(patches, weight, bias) + rows.to(x.dtype)).flatten(1, 2)


def _triton_run(x, weight, bias, pos, vis, lead_ids):
    from ._triton_patch_embed import patch_embed_triton

    return patch_embed_triton(x, weight, bias, pos, vis, lead_ids)


def weight_grads(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, vis: torch.Tensor):
    """(dW, db) of the embedding: reductions over every visible token, one GEMM over the gathered patches
    (shared by the fused backends, whose kernels compute the forward and dx)."""
    dim, patch = weight.shape
    b, n_leads, samples = x.shape
    patches = take_slots(x.reshape(b, n_leads, samples // patch, patch), vis.long()).reshape(-1, patch)
    flat = grad.reshape(-1, dim)
    return flat.t().mm(patches.to(flat.dtype)), flat.sum(0)


BACKENDS = {
    b.name: b
    for b in (
        Backend("reference", reference, can_always),
        Backend("triton", _triton_run, triton_why_not),
        _cuda_backend.PATCH_EMBED,
    )
}
DISPATCH = Dispatcher("patch embedding", BACKENDS, {"cuda": ("triton", "reference"), "cpu": ("reference",)})


def _prepare(x, weight, bias, pos, mask, leads) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the inputs once; return (visible slot ids (1 or B, T_vis), lead ids (L,)) as int32."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a float tensor of ECG samples, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() != 3:
        raise ValueError(f"x must be (batch, leads, samples), got shape {tuple(x.shape)}")
    if weight.dim() != 2 or bias.shape != weight.shape[:1]:
        raise ValueError(f"weight must be (D, patch) and bias (D,), got {tuple(weight.shape)} and {tuple(bias.shape)}")
    if not (x.device == weight.device == bias.device == pos.device):
        raise ValueError(
            f"x, weight, bias and pos must be on one device, got {x.device}, {weight.device}, {bias.device}, "
            f"{pos.device}: move the ECGs to the model's device (x.to(device))"
        )
    if not (x.dtype == weight.dtype == bias.dtype):
        raise TypeError(f"x, weight and bias must share a dtype, got {x.dtype}, {weight.dtype}, {bias.dtype}")
    b, n_leads, samples = x.shape
    dim, patch = weight.shape
    if samples % patch:
        raise ValueError(
            f"x has {samples} samples per lead, not a multiple of the patch size {patch}: crop or resample "
            "(ecg_jepa.data.prepare gives 2500 samples, 10 s at 250 Hz)"
        )
    t_all = samples // patch
    if pos.dim() != 2 or pos.shape[1] != dim or pos.shape[0] % t_all:
        raise ValueError(f"pos must be (table leads x {t_all}, {dim}), got {tuple(pos.shape)}")
    if pos.requires_grad:
        raise ValueError("pos is a fixed table and gets no gradient here; pass pos.detach()")
    table_leads = pos.shape[0] // t_all
    leads = tuple(range(n_leads)) if leads is None else tuple(int(i) for i in leads)
    if len(leads) != n_leads or not all(0 <= i < table_leads for i in leads):
        raise ValueError(f"leads must name {n_leads} rows of the {table_leads}-lead position table, got {leads}")
    if not torch.compiler.is_compiling() and not torch.isfinite(x).all():
        raise ValueError("x holds NaN or infinite samples; clean or drop those ECGs first")
    if mask is None:
        vis = torch.arange(t_all, device=x.device)[None]
    else:
        vis = slot_indices(check_slot_mask(mask.to(x.device), b, t_all), hidden=False)
    return vis.to(torch.int32), torch.tensor(leads, dtype=torch.int32, device=x.device)


def patch_embed(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    pos: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    leads: Sequence[int] | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Patch embedding of the visible slots.

    Args:
        x: (B, L, S) ECG samples, S = T·P (2500 = 50 slots x 50 samples for the model).
        weight, bias: (D, P) and (D,): the ``Linear(P -> D)``; same dtype as x.
        pos: (L_table·T, D) fixed position table, row = lead·T + slot (no gradient).
        mask: None, (T,) or (B, T) bool, True = hidden slot (per-sample rows hide equally many).
        leads: the table lead of each input channel (default 0..L-1), any order.
        backend: "auto", "reference", "triton" or "cuda".

    Returns:
        (B, L·T_vis, D) tokens, lead-major, slots ascending: ``patch @ Wᵀ + bias + pos[lead, slot]``.
    """
    vis, lead_ids = _prepare(x, weight, bias, pos, mask, leads)
    name = DISPATCH.select(x, needs_grad(x, weight, bias), backend)
    return BACKENDS[name].run(x, weight, bias, pos, vis, lead_ids)
