"""Transformer pieces shared by the encoder and the predictor (pre-LN ViT block, original naming)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .attention import CroPAAttention


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``p`` in training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-LayerNorm (eps 1e-5) transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False, drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CroPAAttention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, n_leads: int) -> torch.Tensor:
        """x: (B, N, dim) lead-major -> (B, N, dim)."""
        x = x + self.drop_path(self.attn(self.norm1(x), n_leads))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Blocks(nn.Module):
    """A stack of blocks as ``.blocks`` (the original's ``encoder_blocks.blocks.{i}`` key layout); the
    position rows ``pos`` are added before every block (before the first only if ``pos_in_input`` is
    False: the fused patch embedding has already added them)."""

    def __init__(self, blocks: list[Block]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, n_leads: int, pos_in_input: bool = False) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 and pos_in_input else x + pos, n_leads)
        return x


def init_vit_weights(module: nn.Module, blocks: Blocks, std: float = 0.02) -> None:
    """The original initialisation: truncated-normal Linear weights (std 0.02), zero biases, unit
    LayerNorms, then ``attn.proj`` and ``mlp.fc2`` of block i (1-based) divided by sqrt(2·i)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    with torch.no_grad():
        for i, block in enumerate(blocks.blocks, start=1):
            block.attn.proj.weight.div_(math.sqrt(2.0 * i))
            block.mlp.fc2.weight.div_(math.sqrt(2.0 * i))
