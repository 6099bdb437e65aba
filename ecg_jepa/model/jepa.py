"""ECG-JEPA: student encoder, EMA teacher and per-lead predictor, and the model presets (sizes; their
training recipes are in :mod:`ecg_jepa.train.recipe`)."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import N_SLOTS
from ..ops.layout import SlotMask, take_slots
from .encoder import Encoder, EncoderConfig
from .predictor import Predictor


@dataclass(frozen=True)
class Preset:
    """An encoder configuration and its predictor's width, depth and heads."""

    encoder: EncoderConfig
    pred_dim: int
    pred_depth: int
    pred_heads: int


PRESETS: dict[str, Preset] = {
    # The paper: ViT-B encoder (head dim 48), predictor 384 wide, 6 deep, 12 heads.
    "vit-b": Preset(EncoderConfig(dim=768, depth=12, num_heads=16), 384, 6, 12),
    # Small enough to pretrain for a few minutes on 2 CPU cores.
    "tiny": Preset(EncoderConfig(dim=64, depth=2, num_heads=4), 32, 1, 2),
}


class JEPA(nn.Module):
    """Student (``encoder``), EMA teacher (``target_encoder``, no gradients) and ``predictor``.

    ``loss(x, mask)``: x (B, L, 2500), mask (50,) or (B, 50) bool, True = hidden. The teacher encodes the
    whole ECG; its tokens (after the encoder's final LayerNorm) get a non-affine LayerNorm and are taken at
    the hidden slots of every lead. The student encodes the visible slots; the predictor predicts the hidden
    ones lead by lead. SmoothL1 (beta 1, mean) between the two.
    """

    def __init__(self, preset: Preset | str = "vit-b", **encoder_overrides) -> None:
        super().__init__()
        preset = PRESETS[preset] if isinstance(preset, str) else preset
        config = EncoderConfig(**{**preset.encoder.to_dict(), **encoder_overrides})
        self.encoder = Encoder(config)
        self.target_encoder = copy.deepcopy(self.encoder)
        self.target_encoder.requires_grad_(False)
        self.predictor = Predictor(config.dim, preset.pred_dim, preset.pred_depth, preset.pred_heads, config.mlp_ratio)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | SlotMask, *,
                trusted: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, representation std): the std over the batch of the student's mean-pooled visible tokens,
        averaged over features (detached; a collapse alarm when it tends to 0). ``trusted``: x and mask
        were checked where the batch entered (see :meth:`Encoder.forward`): nothing here waits for a GPU."""
        b, n_leads = x.shape[:2]
        mask = SlotMask.of(mask, b, x.device)
        with torch.no_grad():
            h = self.target_encoder(x, trusted=trusted)  # (B, L·50, D)
            h = F.layer_norm(h, h.shape[-1:]).reshape(b, n_leads, N_SLOTS, -1)
            targets = take_slots(h, mask.hidden_ids).flatten(1, 2)
        z = self.encoder(x, mask=mask, trusted=trusted)
        pred = self.predictor(z, mask, n_leads)
        loss = F.smooth_l1_loss(pred.float(), targets.float(), beta=1.0)
        rep_std = z.detach().float().mean(1).std(0).mean() if b > 1 else z.new_zeros(())
        return loss, rep_std

    def compile_blocks(self) -> None:
        """``torch.compile`` the three block stacks (student, teacher, predictor) in place, each as one
        graph with dynamic token counts (any mask, no recompilation) and the CroPA custom ops inside; the
        mask handling around them stays eager. State-dict keys do not change."""
        for blocks in (self.encoder.encoder_blocks, self.target_encoder.encoder_blocks, self.predictor.predictor_blocks):
            blocks.compile(dynamic=True, fullgraph=True)

    def loss(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The JEPA loss of x (B, L, 2500) under mask (50,) or (B, 50), True = hidden."""
        return self(x, mask)[0]

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher <- momentum · teacher + (1 - momentum) · student."""
        student = list(self.encoder.parameters())
        teacher = list(self.target_encoder.parameters())
        torch._foreach_lerp_(teacher, student, 1.0 - momentum)

