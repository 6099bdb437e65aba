"""``CroPAAttention``: the drop-in multi-head attention module."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from ..ops.cropa import cropa_attention


class CroPAAttention(nn.Module):
    """Multi-head self-attention under the CroPA rule: token (l, t) attends (l', t') iff l == l' or t == t'.

    Parameters are named as in the original ECG-JEPA (``qkv``: Linear(dim, 3·dim), rows [0, dim) q,
    [dim, 2·dim) k, [2·dim, 3·dim) v, heads contiguous; ``proj``: Linear(dim, dim)), so its weights load
    unchanged. With ``n_leads=1`` this is ordinary full attention.

    ``backend``: this module's own CroPA backend; None (default) follows the runtime setting
    (:func:`ecg_jepa.use_backend`, ``$ECG_JEPA_ATTN_BACKEND``) when it runs.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, backend: str | None = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise InputError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.backend = backend
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, n_leads: int) -> torch.Tensor:
        """x: (B, N, dim), N = n_leads·T lead-major -> (B, N, dim)."""
        b, n, dim = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = cropa_attention(q, k, v, n_leads, backend=self.backend)
        return self.proj(out.transpose(1, 2).reshape(b, n, dim))
