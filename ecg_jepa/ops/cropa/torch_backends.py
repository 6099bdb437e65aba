"""Pure-torch CroPA attention backends besides the reference: ``sdpa``, ``flex`` and ``structured``.

Each takes q, k, v of shape (B, H, N, d), N = n_leads·T, tokens lead-major (index = lead·T + slot),
and returns (B, H, N, d) in the input dtype. Inputs are validated once, in
:func:`ecg_jepa.ops.cropa.cropa_attention`.
"""
from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F

from ..layout import cropa_allowed, cropa_mask
from .reference import softmax_wide


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_leads: int, scale: float) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` with the dense boolean CroPA mask (none for one lead, where
    CroPA is full attention)."""
    mask = None if n_leads == 1 else cropa_mask(n_leads, q.shape[-2] // n_leads, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


@functools.lru_cache(maxsize=32)
def _flex_block_mask(n_leads: int, n_slots: int, device: str):
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q_idx, kv_idx):
        return cropa_allowed(q_idx, kv_idx, n_slots)

    n = n_leads * n_slots
    return create_block_mask(mask_mod, None, None, n, n, device=device)


FLEX_RECOMPILE_LIMIT = 64
"""Static-shape compilations of ``flex_attention`` allowed (one per shape, dtype and grad mode). Dynamo's
default (8) is reached by a model or benchmark that meets a few shapes, after which it silently runs the
unfused implementation, many times slower (seen on an H100: over 30x)."""


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _recompile_limit_patch():
    """``torch._dynamo.config.patch`` raising the recompilation limit (its name changed across versions)."""
    import torch._dynamo

    name = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    return torch._dynamo.config.patch(**{name: max(FLEX_RECOMPILE_LIMIT, getattr(torch._dynamo.config, name))})


def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_leads: int, scale: float) -> torch.Tensor:
    """FlexAttention with the CroPA ``mask_mod``: compiled on CUDA; on the CPU eager (unfused, forward only)."""
    from torch.nn.attention.flex_attention import flex_attention

    block_mask = _flex_block_mask(n_leads, q.shape[-2] // n_leads, str(q.device))
    if q.is_cuda:
        with _recompile_limit_patch():
            return _compiled_flex()(q, k, v, block_mask=block_mask, scale=scale)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(q, k, v, block_mask=block_mask, scale=scale)


def structured(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_leads: int, scale: float) -> torch.Tensor:
    """Row + column form, never materializing (N, N).

    Intra-lead scores (B, H, L, T, T) and inter-lead scores (B, H, L, T, L) (the self key, already in
    the intra-lead part, excluded) share one softmax over their T + L keys. Plain autograd, so the
    gradients are those of the joint softmax (merging two separate softmaxes by their log-sum-exp gives
    the right forward and wrong gradients).
    """
    b, h, n, d = q.shape
    n_slots = n // n_leads
    qs, ks, vs = (x.reshape(b, h, n_leads, n_slots, d) for x in (q, k, v))
    row = torch.einsum("bhltd,bhlsd->bhlts", qs, ks)  # keys: same lead, every slot
    col = torch.einsum("bhltd,bhmtd->bhltm", qs, ks)  # keys: same slot, every lead
    self_key = torch.eye(n_leads, dtype=torch.bool, device=q.device)[:, None, :]  # (L, 1, L): m == l
    col = col.masked_fill(self_key, float("-inf"))
    probs = softmax_wide(torch.cat([row, col], dim=-1) * scale, q.dtype)
    p_row, p_col = probs.split([n_slots, n_leads], dim=-1)
    out = torch.einsum("bhlts,bhlsd->bhltd", p_row, vs) + torch.einsum("bhltm,bhmtd->bhltd", p_col, vs)
    return out.reshape(b, h, n, d)
