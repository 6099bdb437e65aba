"""Self-supervised pretraining of ECG-JEPA (single process; resumable, every step reproducible).

Each step's batch and mask are functions of (seed, step) alone, so a run resumed from a checkpoint takes
exactly the steps an uninterrupted run would have taken.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..atomic import atomic_write
from ..model.jepa import JEPA
from ..model.masks import multiblock_mask, random_mask
from .schedule import cosine_lr, ema_momentum

CKPT_FORMAT = "ecg-jepa-pretrain/1"


@dataclass
class PretrainConfig:
    """A pretraining run. ``lr`` is the peak of the cosine schedule (warm-up: ``warmup`` of the steps)."""

    preset: str = "tiny"
    mask: str = "multiblock"
    steps: int = 800
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: float = 0.1
    seed: int = 0
    attn_backend: str = "auto"
    checkpoint_every: int = 100
    workers: int = 1

    def __post_init__(self) -> None:
        if self.mask not in ("multiblock", "random"):
            raise ValueError(f"mask must be 'multiblock' or 'random', got {self.mask!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive")


def step_mask(cfg: PretrainConfig, step: int) -> torch.Tensor:
    """The (50,) slot mask of a step: the same on every rank and after a resume."""
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    return multiblock_mask(generator=gen) if cfg.mask == "multiblock" else random_mask(generator=gen)


def step_indices(cfg: PretrainConfig, step: int, n: int) -> torch.Tensor:
    """Dataset indices of a step's batch: epoch-wise permutations seeded by (seed, epoch)."""
    per_epoch = max(1, n // cfg.batch_size)
    epoch, pos = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch))
    return perm[pos * cfg.batch_size : (pos + 1) * cfg.batch_size]


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices only, none on biases and other 1-D parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0},
    ]


def save_checkpoint(path: Path, model: JEPA, opt: torch.optim.Optimizer, cfg: PretrainConfig, step: int) -> None:
    """Everything a resume needs, written atomically; ``load_encoder`` reads its student encoder."""
    payload = {
        "format": CKPT_FORMAT,
        "config": model.encoder.config.to_dict(),
        "encoder": model.encoder.state_dict(),
        "target_encoder": model.target_encoder.state_dict(),
        "predictor": model.predictor.state_dict(),
        "optimizer": opt.state_dict(),
        "pretrain_config": asdict(cfg),
        "step": step,
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def pretrain(
    cfg: PretrainConfig, data: Dataset, out: str | Path, resume: bool = False, progress: bool = True
) -> JEPA:
    """Train ``cfg.steps`` steps on ``data`` (items ``(x, label)``, x (L, 2500)); checkpoints and a JSONL
    log go to ``out``. With ``resume``, continue from ``out/checkpoint.pt`` when it exists."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    torch.manual_seed(cfg.seed)
    model = JEPA(cfg.preset, attn_backend=cfg.attn_backend)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    start = 0
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if state.get("format") != CKPT_FORMAT:
            raise ValueError(f"{ckpt_path} is not a pretraining checkpoint (format {state.get('format')!r})")
        if state["pretrain_config"] != asdict(cfg):
            raise ValueError(
                f"{ckpt_path} was written by a run with another configuration: {state['pretrain_config']}; "
                "resume with the same options or use a new output folder"
            )
        for name in ("encoder", "target_encoder", "predictor"):
            getattr(model, name).load_state_dict(state[name])
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
    warmup = int(cfg.warmup * cfg.steps)
    batches = [step_indices(cfg, step, len(data)).tolist() for step in range(start, cfg.steps)]
    loader = DataLoader(data, batch_sampler=batches, num_workers=cfg.workers)
    model.train()
    with open(out / "log.jsonl", "a") as log, tqdm(
        total=cfg.steps, initial=start, desc="pretrain", disable=not progress, dynamic_ncols=True
    ) as bar:
        tic = time.perf_counter()
        for step, (x, _) in enumerate(loader, start=start):
            lr = cosine_lr(step, cfg.steps, warmup, cfg.lr)
            for group in opt.param_groups:
                group["lr"] = lr
            loss = model.loss(x, step_mask(cfg, step))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            momentum = ema_momentum(step, cfg.steps)
            model.update_teacher(momentum)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower --lr")
            rate = len(x) / (time.perf_counter() - tic)
            tic = time.perf_counter()
            log.write(json.dumps({"step": step, "loss": loss.item(), "lr": lr, "momentum": momentum, "ecg_per_s": rate}) + "\n")
            bar.set_postfix(loss=f"{loss.item():.4f}", ecg_s=f"{rate:.0f}")
            bar.update(1)
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                log.flush()
                save_checkpoint(ckpt_path, model, opt, cfg, step + 1)
    return model
