"""The training recipes, once: pretraining per (preset, mask), the downstream probe and fine-tuning, and the
per-step schedules (cosine learning rate, EMA momentum). The command line's help, :class:`PretrainConfig`'s
defaults and the downstream functions' defaults all read them from here."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InputError
from ..model.jepa import PRESETS


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
MASKS: tuple[str, ...] = ("multiblock", "random")
DEFAULT_PRESET, DEFAULT_MASK = "tiny", "multiblock"
WEIGHT_DECAY = 0.05
"""AdamW weight decay of pretraining and fine-tuning (matrices only)."""
WARMUP_SHARE = 0.1
"""Warm-up as a share of the steps when the run is not counted in epochs."""
LR_START = LR_FLOOR = 1e-6
"""The learning rate the warm-up starts from and the cosine decay ends at."""
EMA_START, EMA_END = 0.996, 1.0


@dataclass(frozen=True)
class DownstreamRecipe:
    """AdamW on labelled ECGs: ``epochs`` of ``batch_size``, learning rate ``lr``."""

    epochs: int
    lr: float
    batch_size: int
    weight_decay: float


LINEAR_PROBE = DownstreamRecipe(epochs=10, lr=0.01, batch_size=16, weight_decay=0.01)
"""The paper's linear probe on frozen features (AdamW's default weight decay)."""
FINETUNE = DownstreamRecipe(epochs=10, lr=6.25e-6, batch_size=16, weight_decay=WEIGHT_DECAY)
"""Full fine-tuning of the encoder with a linear head."""


@dataclass(frozen=True)
class Schedule:
    """A run's length and optimizer settings, resolved for a dataset: ``steps`` of ``batch_size``,
    ``warmup_steps`` of linear warm-up to ``lr``; ``per_epoch`` steps make one pass over the data."""

    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    per_epoch: int


def default_warmup(steps: int) -> int:
    """Warm-up steps of a run of ``steps`` not counted in epochs."""
    return int(steps * WARMUP_SHARE)


def resolve_recipe(preset: str, mask: str, n_records: int, *, batch_size: int | None = None, lr: float | None = None,
                   epochs: int | None = None, steps: int | None = None, warmup_epochs: float | None = None) -> Schedule:
    """The preset's recipe for ``mask`` on ``n_records`` ECGs, with any of its values overridden. Steps win
    over epochs; without either the recipe's length is used; warm-up defaults to the recipe's warm-up
    epochs when the run is counted in epochs, else :data:`WARMUP_SHARE` of the steps."""
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
    warmup = int(warmup_epochs * per_epoch) if warmup_epochs is not None else default_warmup(steps)
    return Schedule(steps, batch, r.lr if lr is None else lr, min(warmup, steps), per_epoch)


def number(value: float) -> str:
    """A number as help texts write it: 64, 0.001, 5e-5."""
    return format(value, "g").replace("e-0", "e-").replace("e+0", "e+")


def recipe_values(field: str) -> str:
    """One recipe field of every preset, for help texts: "vit-b: 64 multiblock / 128 random; tiny: 32"
    (presets whose recipes leave it unset are left out)."""
    parts = []
    for preset in PRESETS:
        values = {mask: getattr(RECIPES[(preset, mask)], field) for mask in MASKS}
        if None in values.values():
            continue
        if len(set(values.values())) == 1:
            parts.append(f"{preset}: {number(values[MASKS[0]])}")
        else:
            parts.append(f"{preset}: " + " / ".join(f"{number(v)} {mask}" for mask, v in values.items()))
    return "; ".join(parts)


def cosine_lr(step: int, total: int, warmup: int, peak: float, start: float = LR_START, floor: float = LR_FLOOR) -> float:
    """Linear warm-up from ``start`` to ``peak`` over ``warmup`` steps, then cosine decay to ``floor``."""
    if step < warmup:
        return start + (peak - start) * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def ema_momentum(step: int, total: int, start: float = EMA_START, end: float = EMA_END) -> float:
    """Teacher EMA momentum, linear from ``start`` to ``end`` over the run."""
    return start + (end - start) * min(1.0, step / max(1, total))
