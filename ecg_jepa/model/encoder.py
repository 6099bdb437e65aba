"""The ECG-JEPA encoder: patch embedding, fixed 2-D sin-cos positions added before every block, CroPA
blocks, final LayerNorm."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..constants import LEADS, N_SAMPLES, N_SLOTS, PATCH
from ..errors import InputError, InputTypeError
from ..ops.layout import SlotMask, take_slots
from ..ops.patch_embed import patch_embed
from .posenc import sincos_2d
from .vit import Block, Blocks, init_vit_weights


@dataclass
class EncoderConfig:
    """Encoder architecture. ``leads`` are indices into :data:`ecg_jepa.LEADS` (the rows of the position
    table the input channels use, in input order); the default is all 8 in order. Which kernels run it is
    no part of it: see :func:`ecg_jepa.use_backend`."""

    dim: int = 768
    depth: int = 12
    num_heads: int = 16
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    drop_path: float = 0.0
    leads: tuple[int, ...] = field(default_factory=lambda: tuple(range(len(LEADS))))

    def __post_init__(self) -> None:
        self.leads = tuple(int(i) for i in self.leads)
        if self.dim % 4 or self.dim % self.num_heads:
            raise InputError(f"dim {self.dim} must be divisible by 4 and by num_heads {self.num_heads}")
        if not self.leads or len(set(self.leads)) != len(self.leads) or not all(0 <= i < len(LEADS) for i in self.leads):
            raise InputError(f"leads must be distinct indices in [0, {len(LEADS)}), got {self.leads}")

    def to_dict(self) -> dict:
        return {**asdict(self), "leads": list(self.leads)}


class Encoder(nn.Module):
    """ECG-JEPA encoder (the original's ``MaskTransformer``; state-dict keys match its release).

    ``enc(x)``: x (B, L, 2500) float, L = len(config.leads) -> tokens (B, L·50, D) after the final LayerNorm,
    lead-major (index = lead·50 + slot).
    ``enc(x, mask=m)``: m bool (50,) or (B, 50), True = hidden slot (the same slots in every lead; per-sample
    rows must hide equally many) -> visible tokens (B, L·T_vis, D), lead-major, slot ascending.
    ``enc.embed(x)`` -> (B, D): the mean over tokens, the representation used downstream.
    """

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or EncoderConfig()
        self.W_P = nn.Linear(PATCH, config.dim)
        # A frozen parameter (not a buffer) so the state dict matches the original release.
        self.pos_embed = nn.Parameter(sincos_2d(config.dim, len(LEADS), N_SLOTS), requires_grad=False)
        dpr = torch.linspace(0, config.drop_path, config.depth).tolist()
        self.encoder_blocks = Blocks(
            [Block(config.dim, config.num_heads, config.mlp_ratio, config.qkv_bias, p) for p in dpr]
        )
        self.norm = nn.LayerNorm(config.dim)
        init_vit_weights(self, self.encoder_blocks)
        # The position-table lead of each input channel, on the model's device (no host data per call).
        self.register_buffer("lead_ids", torch.tensor(config.leads, dtype=torch.int32), persistent=False)

    @property
    def n_leads(self) -> int:
        return len(self.config.leads)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error unless x is a float (B, L, 2500) batch for this encoder (NaN is caught by
        :func:`ecg_jepa.ops.patch_embed.patch_embed`). Any float dtype is accepted: x is computed in the
        parameters' dtype (or autocast's)."""
        if not isinstance(x, torch.Tensor):
            raise InputTypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise InputTypeError(f"x must be a float tensor of ECG samples, got {x.dtype}")
        if x.dim() != 3:
            raise InputError(f"x must be (batch, leads, {N_SAMPLES}), got shape {tuple(x.shape)}")
        if x.shape[1] != self.n_leads:
            names = ", ".join(LEADS[i] for i in self.config.leads)
            raise InputError(
                f"x has {x.shape[1]} leads but the encoder was built for {self.n_leads} ({names}); select those "
                "leads in that order, or load the encoder with leads=[...] for a reduced-lead model"
            )
        if x.shape[2] != N_SAMPLES:
            raise InputError(
                f"x has {x.shape[2]} samples per lead; the encoder takes {N_SAMPLES} (10 s at 250 Hz): resample and "
                "crop with ecg_jepa.data.prepare"
            )

    def position_rows(self) -> torch.Tensor:
        """(L, 50, D): the table rows of this encoder's leads, in input order."""
        return self.pos_embed.view(len(LEADS), N_SLOTS, -1).index_select(0, self.lead_ids)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | SlotMask | None = None, *,
                trusted: bool = False) -> torch.Tensor:
        """Tokens of x (see the class docstring). ``trusted``: the batch was already checked where it
        entered (finite samples, a validated :class:`SlotMask` on x's device), so nothing here reads tensor
        values, which on a GPU would wait for it (the training loop passes True)."""
        self.check_input(x)
        b, n_leads = x.shape[:2]
        if not torch.is_autocast_enabled(x.device.type):
            x = x.to(self.W_P.weight.dtype)  # float64 or float16 ECGs into a float32 model, and so on
        if mask is not None:
            mask = SlotMask.of(mask, b, x.device)  # validated once, here; layers below use its slot ids
        tokens = patch_embed(  # (B, L·T_vis, D), lead-major, position rows added
            x, self.W_P.weight.to(x.dtype), self.W_P.bias.to(x.dtype), self.pos_embed, mask=mask,
            leads=self.lead_ids, check_finite=not trusted,
        )
        pos = self.position_rows().to(tokens.dtype)[None]  # (1, L, 50, D)
        if mask is not None:
            pos = take_slots(pos, mask.visible)
        tokens = self.encoder_blocks(tokens, pos.flatten(1, 2), n_leads, pos_in_input=True)
        return self.norm(tokens)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, 2500) -> (B, D): mean-pooled tokens of the unmasked ECG."""
        return self.forward(x).mean(dim=1)

