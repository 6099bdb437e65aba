"""ECG-JEPA: student encoder, EMA teacher and per-lead predictor."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import N_SLOTS
from ..errors import InputError
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


@dataclass(frozen=True)
class Recipe:
    """A preset's pretraining recipe for one masking strategy: global batch, peak learning rate, and the
    run's length in epochs (with warm-up epochs) or in steps."""

    batch_size: int
    lr: float
    epochs: int | None = None
    warmup_epochs: float | None = None
    steps: int | None = None


RECIPES: dict[tuple[str, str], Recipe] = {
    # The paper's: batch and lr depend on the mask; 100 epochs with 5 of linear warm-up.
    ("vit-b", "multiblock"): Recipe(64, 5e-5, epochs=100, warmup_epochs=5),
    ("vit-b", "random"): Recipe(128, 2.5e-5, epochs=100, warmup_epochs=5),
    # A few minutes on 2 CPU cores.
    ("tiny", "multiblock"): Recipe(32, 1e-3, steps=800),
    ("tiny", "random"): Recipe(32, 1e-3, steps=800),
}


@dataclass(frozen=True)
class Schedule:
    """A run's length and optimizer settings, resolved for a dataset: ``steps`` of ``batch_size``,
    ``warmup_steps`` of linear warm-up to ``lr``; ``per_epoch`` steps make one pass over the data."""

    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    per_epoch: int


def resolve_recipe(preset: str, mask: str, n_records: int, *, batch_size: int | None = None, lr: float | None = None,
                   epochs: int | None = None, steps: int | None = None, warmup_epochs: float | None = None) -> Schedule:
    """The preset's recipe for ``mask`` on ``n_records`` ECGs, with any of its values overridden. Steps win
    over epochs; without either the recipe's length is used; warm-up defaults to the recipe's warm-up
    epochs when the run is counted in epochs, else 10 % of the steps."""
    if (preset, mask) not in RECIPES:
        raise InputError(f"no recipe for preset {preset!r} with {mask!r} masks; presets: {', '.join(PRESETS)}")
    r = RECIPES[(preset, mask)]
    batch = r.batch_size if batch_size is None else batch_size
    if batch < 1 or (steps is not None and steps < 1):
        raise InputError(f"steps and batch_size must be positive, got steps={steps}, batch size={batch}")
    if n_records < batch:
        raise InputError(f"batch size {batch} is larger than the {n_records} ECGs to train on; "
                         f"pass a batch size of at most {n_records} or more data")
    per_epoch = n_records // batch
    epochs = epochs if epochs is not None else (None if steps is not None else r.epochs)
    steps = steps if steps is not None else (epochs * per_epoch if epochs is not None else r.steps)
    if steps < 1:
        raise InputError(f"the run has no steps: {epochs} epochs of {per_epoch} steps; train longer")
    warmup_epochs = warmup_epochs if warmup_epochs is not None else (r.warmup_epochs if epochs else None)
    warmup = int(warmup_epochs * per_epoch) if warmup_epochs is not None else steps // 10
    return Schedule(steps, batch, r.lr if lr is None else lr, min(warmup, steps), per_epoch)


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
        self.predictor = Predictor(
            config.dim, preset.pred_dim, preset.pred_depth, preset.pred_heads, config.mlp_ratio,
            attn_backend=config.attn_backend,
        )

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

