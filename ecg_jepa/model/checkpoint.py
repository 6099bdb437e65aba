"""Encoder checkpoints: our own format and the original ECG-JEPA release format.

Original release (facts): ``torch.save({'encoder': state_dict, 'epoch': int})``, the student encoder only,
float32 on CPU; keys ``pos_embed`` (400, D), ``W_P.{weight,bias}``, ``norm.{weight,bias}`` and
``encoder_blocks.blocks.{i}.{norm1,norm2,attn.qkv,attn.proj,mlp.fc1,mlp.fc2}.*`` (no qkv bias).
Ours: ``{'format': FORMAT, 'config': EncoderConfig.to_dict(), 'encoder': state_dict}``; no backend: which
kernels run a loaded encoder is decided where it runs (:func:`ecg_jepa.use_backend`).
Both load with ``weights_only=True``: no arbitrary objects are ever unpickled.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from ..atomic import atomic_write, load_torch
from ..constants import LEADS, N_SLOTS, PATCH, find_lead
from ..errors import InputError
from .encoder import Encoder, EncoderConfig

FORMAT = "ecg-jepa-encoder/1"
PAPER_HEAD_DIM = 48
_BLOCK_KEY = re.compile(r"^encoder_blocks\.blocks\.(\d+)\.")
RUNTIME_FIELDS = ("attn_backend", "embed_backend")
"""Config fields of checkpoints written while the backends were part of the config: ignored on load."""


def save_encoder(encoder: Encoder, path: str | os.PathLike) -> Path:
    """Write ``encoder`` atomically in our format (config + state dict)."""
    payload = {"format": FORMAT, "config": encoder.config.to_dict(), "encoder": encoder.state_dict()}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def parse_leads(leads: str | Sequence[str | int]) -> tuple[int, ...]:
    """Lead names (matched by :func:`~ecg_jepa.constants.canonical_lead`; a string may list several,
    comma-separated: "II,V1") or indices into :data:`LEADS` -> indices, in the given order."""
    if isinstance(leads, str):
        leads = [name for name in leads.split(",") if name.strip()]
    if not leads:
        raise InputError(f"no leads given; name some of {', '.join(LEADS)}")
    out = []
    for lead in leads:
        if isinstance(lead, str):
            index = find_lead(lead, LEADS)
            if index is None:
                raise InputError(f"unknown lead {lead!r}; the encoder knows {', '.join(LEADS)}")
            out.append(index)
        else:
            out.append(int(lead))
    return tuple(out)


def config_from_dict(values: dict, source: str) -> EncoderConfig:
    """An :class:`EncoderConfig` from a checkpoint's stored config, with a clear error for fields this
    version does not know (a checkpoint written by a newer ecg-jepa) or bad values; the backend fields of
    older checkpoints (:data:`RUNTIME_FIELDS`) are dropped."""
    values = {k: v for k, v in values.items() if k not in RUNTIME_FIELDS}
    unknown = sorted(set(values) - set(EncoderConfig.__dataclass_fields__))
    if unknown:
        raise InputError(f"{source}: its encoder config has fields this ecg-jepa does not know ({', '.join(unknown)}); "
                         "it was written by a newer version: upgrade ecg-jepa to read it")
    return EncoderConfig(**values)


def infer_config(state: dict[str, torch.Tensor], num_heads: int | None = None) -> EncoderConfig:
    """Architecture of an original-format encoder state dict, from its tensor shapes. Heads are not in
    the shapes: ``num_heads`` if given, else width / 48 (the paper's head dim)."""
    for key in ("W_P.weight", "pos_embed", "encoder_blocks.blocks.0.mlp.fc1.weight"):
        if key not in state:
            raise InputError(f"not an ECG-JEPA encoder state dict: key {key!r} is missing")
    dim, patch = state["W_P.weight"].shape
    if patch != PATCH:
        raise InputError(f"W_P.weight has shape {tuple(state['W_P.weight'].shape)}: patches must be {PATCH} samples")
    if state["pos_embed"].shape != (len(LEADS) * N_SLOTS, dim):
        raise InputError(
            f"pos_embed has shape {tuple(state['pos_embed'].shape)}, expected ({len(LEADS) * N_SLOTS}, {dim}) "
            f"for {len(LEADS)} leads x {N_SLOTS} slots"
        )
    depth = 1 + max(int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k)))
    if num_heads is None:
        if dim % PAPER_HEAD_DIM:
            raise InputError(f"cannot infer heads for width {dim} (not a multiple of {PAPER_HEAD_DIM}); pass num_heads=")
        num_heads = dim // PAPER_HEAD_DIM
    hidden = state["encoder_blocks.blocks.0.mlp.fc1.weight"].shape[0]
    return EncoderConfig(
        dim=dim, depth=depth, num_heads=num_heads, mlp_ratio=hidden / dim,
        qkv_bias="encoder_blocks.blocks.0.attn.qkv.bias" in state,
    )


def _read(path: str | os.PathLike) -> dict:
    obj = load_torch(path, "checkpoint")
    if not isinstance(obj, dict):
        raise InputError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def _load_strict(encoder: Encoder, state: dict[str, torch.Tensor], source: str) -> None:
    expected = encoder.state_dict()
    for key in expected:
        if key not in state:
            raise InputError(f"{source}: missing key {key!r} (expected for {encoder.config})")
    for key in state:
        if key not in expected:
            raise InputError(f"{source}: unexpected key {key!r}; it matches no part of {encoder.config}")
        if state[key].shape != expected[key].shape:
            raise InputError(
                f"{source}: key {key!r} has shape {tuple(state[key].shape)}, expected {tuple(expected[key].shape)}"
            )
    encoder.load_state_dict(state, strict=True)


def load_encoder(
    path: str | os.PathLike,
    leads: Sequence[str | int] | None = None,
    *,
    num_heads: int | None = None,
) -> Encoder:
    """Load an encoder (eval mode) from our checkpoints or the original ECG-JEPA release format.

    leads: names or indices of :data:`LEADS`, any order (e.g. ``["V6", "I", "V2"]``): a reduced-lead model
    whose inputs have len(leads) channels in that order; position rows and the CroPA rule follow them.
    num_heads: for original-format files, when the width is not 48 per head.
    """
    obj = _read(path)
    if obj.get("format") == FORMAT or "config" in obj:
        if not isinstance(obj.get("encoder"), dict) or not isinstance(obj.get("config"), dict):
            raise InputError(f"{path} has a 'config' but no encoder state dict beside it: not an ecg-jepa checkpoint")
        config = config_from_dict(obj["config"], str(path))
        state = obj["encoder"]
    else:
        state = obj.get("encoder", obj)
        if not isinstance(state, dict):
            raise InputError(f"{path}: 'encoder' holds a {type(state).__name__}, not a state dict")
        config = infer_config(state, num_heads)
    if leads is not None:
        config.leads = parse_leads(leads)
    encoder = Encoder(EncoderConfig(**config.to_dict()))
    _load_strict(encoder, state, str(path))
    return encoder.eval()
