"""``patch_embed``: raw ECG -> visible tokens (patches, Linear, bias, position rows) in one op.

Backends (one module each): ``reference`` (:mod:`.reference`, the eager twin), ``triton`` (:mod:`.triton`,
kernels in ``kernels/patch_embed.py``) and ``cuda`` (:mod:`.cuda`, kernels in ``csrc/patch_embed.cu``);
capabilities declared below as data; :mod:`.testing` holds the float64 oracle.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ... import build_ext
from ...errors import InputError, InputTypeError
from ..layout import SlotMask
from ..registry import Backend, Capabilities, Dispatcher, InputSpec, needs_grad, triton_available
from .reference import reference


def _triton_run(x, weight, bias, pos, vis, lead_ids):
    from .triton import patch_embed_triton

    return patch_embed_triton(x, weight, bias, pos, vis, lead_ids)


def _cuda_run(x, weight, bias, pos, vis, lead_ids):
    from .cuda import embed

    return embed(x, weight, bias, pos, vis, lead_ids)


_FUSED = Capabilities(devices=("cuda",), dtypes=(torch.float32, torch.float16, torch.bfloat16),
                      min_capability=((torch.bfloat16, (8, 0)),))

BACKENDS = {
    b.name: b
    for b in (
        Backend("reference", reference),
        Backend("triton", _triton_run, Capabilities(**{**_FUSED.__dict__, "interpreted_on_cpu": True}),
                available=triton_available),
        Backend("cuda", _cuda_run, _FUSED, available=build_ext.why_unavailable,
                note="on request: its GPU parity and speed are not recorded yet, so auto takes triton"),
    )
}


def auto_order(spec: InputSpec) -> tuple[tuple[str, ...], str]:
    if spec.device == "cuda":
        return ("triton", "reference"), "fastest first on a GPU"
    return ("reference",), "the fused kernels need a GPU"


DISPATCH = Dispatcher("patch embedding", BACKENDS, auto_order, "embed")


def _prepare(x, weight, bias, pos, mask, leads, check_finite) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the inputs once; return (visible slot ids (1 or B, T_vis), lead ids (L,)) as int32."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise InputTypeError(f"x must be a float tensor of ECG samples, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() != 3:
        raise InputError(f"x must be (batch, leads, samples), got shape {tuple(x.shape)}")
    if weight.dim() != 2 or bias.shape != weight.shape[:1]:
        raise InputError(f"weight must be (D, patch) and bias (D,), got {tuple(weight.shape)} and {tuple(bias.shape)}")
    if not (x.device == weight.device == bias.device == pos.device):
        raise InputError(
            f"x, weight, bias and pos must be on one device, got {x.device}, {weight.device}, {bias.device}, "
            f"{pos.device}: move the ECGs to the model's device (x.to(device))"
        )
    if not (x.dtype == weight.dtype == bias.dtype):
        raise InputTypeError(f"x, weight and bias must share a dtype, got {x.dtype}, {weight.dtype}, {bias.dtype}")
    b, n_leads, samples = x.shape
    dim, patch = weight.shape
    if samples % patch:
        raise InputError(
            f"x has {samples} samples per lead, not a multiple of the patch size {patch}: crop or resample "
            "(ecg_jepa.data.prepare gives 2500 samples, 10 s at 250 Hz)"
        )
    t_all = samples // patch
    if pos.dim() != 2 or pos.shape[1] != dim or pos.shape[0] % t_all:
        raise InputError(f"pos must be (table leads x {t_all}, {dim}), got {tuple(pos.shape)}")
    if pos.requires_grad:
        raise InputError("pos is a fixed table and gets no gradient here; pass pos.detach()")
    table_leads = pos.shape[0] // t_all
    if isinstance(leads, torch.Tensor):  # a model's own int32 buffer, validated when the model was built
        if leads.shape != (n_leads,) or leads.dtype != torch.int32 or leads.device != x.device:
            raise InputError(f"leads as a tensor must be ({n_leads},) int32 on {x.device}, got {tuple(leads.shape)} "
                             f"{leads.dtype} on {leads.device}")
        lead_ids = leads
    else:
        leads = tuple(range(n_leads)) if leads is None else tuple(int(i) for i in leads)
        if len(leads) != n_leads or not all(0 <= i < table_leads for i in leads):
            raise InputError(f"leads must name {n_leads} rows of the {table_leads}-lead position table, got {leads}")
        lead_ids = torch.tensor(leads, dtype=torch.int32, device=x.device)
    if check_finite and not torch.compiler.is_compiling() and not torch.isfinite(x).all():
        raise InputError("x holds NaN or infinite samples; clean or drop those ECGs first")
    if mask is None:
        vis = torch.arange(t_all, device=x.device)[None]
    else:
        vis = SlotMask.of(mask, b, x.device, n_slots=t_all).visible
    return vis.to(torch.int32), lead_ids


def patch_embed(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    pos: torch.Tensor,
    *,
    mask: torch.Tensor | SlotMask | None = None,
    leads: Sequence[int] | torch.Tensor | None = None,
    backend: str | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """Patch embedding of the visible slots.

    Args:
        x: (B, L, S) ECG samples, S = T·P (2500 = 50 slots x 50 samples for the model).
        weight, bias: (D, P) and (D,): the ``Linear(P -> D)``; same dtype as x.
        pos: (L_table·T, D) fixed position table, row = lead·T + slot (no gradient).
        mask: None, (T,) or (B, T) bool, True = hidden slot (per-sample rows hide equally many), or a
            :class:`~ecg_jepa.ops.layout.SlotMask` already validated.
        leads: the table lead of each input channel (default 0..L-1), any order; or those ids as an (L,)
            int32 tensor on x's device (a model's buffer: no host data per call).
        backend: "auto", "reference", "triton" or "cuda"; None (default): the runtime setting,
            :func:`ecg_jepa.use_backend` or ``$ECG_JEPA_EMBED_BACKEND``, else "auto".
        check_finite: refuse NaN or infinite samples (reads x's values: on a GPU that waits for it; pass
            False when the batch was checked where it entered).

    Returns:
        (B, L·T_vis, D) tokens, lead-major, slots ascending: ``patch @ Wᵀ + bias + pos[lead, slot]``.
    """
    vis, lead_ids = _prepare(x, weight, bias, pos, mask, leads, check_finite)
    name = DISPATCH.select(InputSpec.of(x, needs_grad(x, weight, bias)), backend)
    return BACKENDS[name].run(x, weight, bias, pos, vis, lead_ids)


__all__ = ["BACKENDS", "DISPATCH", "auto_order", "patch_embed"]
