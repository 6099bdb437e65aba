"""The per-lead predictor: from one lead's visible encoder tokens, predict the teacher's features at
that lead's hidden slots."""
from __future__ import annotations

import torch
from torch import nn

from ..constants import N_SLOTS
from ..ops.layout import SlotMask
from .posenc import sincos_2d
from .vit import Block, Blocks, init_vit_weights


class Predictor(nn.Module):
    """Each lead is its own sequence: ``predictor_embed`` (D -> Dp) of its T_vis visible tokens, then one
    shared mask token per hidden slot appended after them; a time-only sin-cos table (the 2-D table with
    one lead) added before every block; full attention within the lead (no CroPA); final LayerNorm and
    ``predictor_proj`` (Dp -> D). Key names follow the original's ``MaskTransformerPredictor``.
    """

    def __init__(
        self, dim: int, pred_dim: int = 384, depth: int = 6, num_heads: int = 12, mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.predictor_embed = nn.Linear(dim, pred_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, pred_dim))
        self.pos_embed = nn.Parameter(sincos_2d(pred_dim, 1, N_SLOTS), requires_grad=False)
        dpr = torch.linspace(0, drop_path, depth).tolist()
        self.predictor_blocks = Blocks(
            [Block(pred_dim, num_heads, mlp_ratio, False, p) for p in dpr]
        )
        self.predictor_norm = nn.LayerNorm(pred_dim)
        self.predictor_proj = nn.Linear(pred_dim, dim)
        init_vit_weights(self, self.predictor_blocks)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, tokens: torch.Tensor, mask: SlotMask, n_leads: int) -> torch.Tensor:
        """tokens: (B, L·T_vis, D) visible encoder outputs, lead-major; mask: the batch's slot mask.

        Returns (B, L·T_mask, D): predictions at each lead's hidden slots, slots ascending.
        """
        b = tokens.shape[0]
        x = self.predictor_embed(tokens)
        x = x.reshape(b * n_leads, -1, x.shape[-1])  # one sequence per (sample, lead)
        n_vis = x.shape[1]
        n_hidden = N_SLOTS - n_vis
        x = torch.cat([x, self.mask_token.expand(x.shape[0], n_hidden, -1)], dim=1)
        # Slot order of each sequence: visible slots ascending, then hidden slots ascending.
        pos = self.pos_embed.to(x.dtype)[mask.order]  # (1 or B, 50, Dp)
        pos = pos.repeat_interleave(n_leads, dim=0) if pos.shape[0] > 1 else pos
        x = self.predictor_blocks(x, pos, n_leads=1)
        x = self.predictor_proj(self.predictor_norm(x[:, n_vis:]))
        return x.reshape(b, n_leads * n_hidden, -1)
