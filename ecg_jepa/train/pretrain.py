"""Self-supervised pretraining of ECG-JEPA: AMP, optional torch.compile, torchrun DDP, exact resume.

Each step's global batch and mask are functions of (seed, step) alone. Rank r of W takes the r-th slice of
the global batch (the role of a DistributedSampler with set_epoch, but also exact when a run resumes in the
middle of an epoch), every rank uses the same mask, DDP averages the gradients, so W processes take the
steps one process would take on the same global batch; the EMA teacher, updated from identical students,
stays identical on every rank. Rank 0 alone logs and writes checkpoints (atomically).
"""
from __future__ import annotations

import json
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..atomic import atomic_write
from ..errors import InputError
from ..model.jepa import JEPA
from ..model.masks import multiblock_mask, random_mask
from .distributed import World, barrier
from .schedule import cosine_lr, ema_momentum

CKPT_FORMAT = "ecg-jepa-pretrain/1"
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class PretrainConfig:
    """A pretraining run: ``steps`` optimizer steps of ``batch_size`` ECGs (global, over all ranks);
    ``lr`` is the peak of the per-step cosine schedule, reached after ``warmup_steps`` from 1e-6."""

    preset: str = "tiny"
    mask: str = "multiblock"
    per_sample_masks: bool = False
    steps: int = 800
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 80
    weight_decay: float = 0.05
    precision: str = "fp32"
    compile: bool = False
    seed: int = 0
    attn_backend: str = "auto"
    checkpoint_every: int = 100
    workers: int = 1

    def __post_init__(self) -> None:
        if self.mask not in ("multiblock", "random"):
            raise InputError(f"mask must be 'multiblock' or 'random', got {self.mask!r}")
        if self.per_sample_masks and self.mask != "random":
            raise InputError("per-sample masks need --mask random (multi-block unions differ in size per sample)")
        if self.steps < 1 or self.batch_size < 1:
            raise InputError("steps and batch_size must be positive")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


def step_mask(cfg: PretrainConfig, step: int) -> torch.Tensor:
    """The step's slot mask, (50,) or per sample (batch_size, 50): the same on every rank and after a resume."""
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    if cfg.mask == "multiblock":
        return multiblock_mask(generator=gen)
    if not cfg.per_sample_masks:
        return random_mask(generator=gen)
    ratio = 0.6 + 0.1 * torch.rand(1, generator=gen).item()  # one ratio per step: equal hidden counts
    return torch.stack([random_mask((ratio, ratio), generator=gen) for _ in range(cfg.batch_size)])


def step_indices(cfg: PretrainConfig, step: int, n: int) -> torch.Tensor:
    """Dataset indices of a step's global batch: epoch-wise permutations seeded by (seed, epoch)."""
    per_epoch = max(1, n // cfg.batch_size)
    epoch, pos = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch))
    return perm[pos * cfg.batch_size : (pos + 1) * cfg.batch_size]


def rank_slice(world: World, batch: int) -> slice:
    """This rank's part of a global batch."""
    if batch % world.size:
        raise InputError(f"batch size {batch} is not divisible by the {world.size} processes")
    per = batch // world.size
    return slice(world.rank * per, (world.rank + 1) * per)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices only, none on biases and other 1-D parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0},
    ]


def save_checkpoint(path: Path, model: JEPA, opt, scaler, cfg: PretrainConfig, step: int) -> None:
    """Everything a resume needs, written atomically; ``load_encoder`` reads its student encoder."""
    payload = {
        "format": CKPT_FORMAT,
        "config": model.encoder.config.to_dict(),
        "encoder": model.encoder.state_dict(),
        "target_encoder": model.target_encoder.state_dict(),
        "predictor": model.predictor.state_dict(),
        "optimizer": opt.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": torch.get_rng_state(),
        "pretrain_config": asdict(cfg),
        "step": step,
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def plot_log(log_path: Path, png: Path) -> None:
    """Loss, learning rate, EMA momentum and representation std against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in open(log_path)]
    if not rows:
        return
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    for ax, key in zip(axes, ("loss", "lr", "momentum", "rep_std")):
        ax.plot(steps, [r[key] for r in rows], lw=0.8)
        ax.set_title(key + (" (collapse if → 0)" if key == "rep_std" else ""))
        ax.set_xlabel("step")
    axes[0].set_yscale("log")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def pretrain(
    cfg: PretrainConfig, data: Dataset, out: str | Path, resume: bool = False, progress: bool = True,
    world: World = World(),
) -> JEPA:
    """Train ``cfg.steps`` steps on ``data`` (items ``(x, ...)``, x (L, 2500)). Checkpoints, ``log.jsonl``
    and ``curves.png`` go to ``out`` (rank 0). With ``resume``, continue from ``out/checkpoint.pt``."""
    out = Path(out)
    ckpt_path = out / "checkpoint.pt"
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = JEPA(cfg.preset, attn_backend=cfg.attn_backend).to(world.device)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    scaler = torch.amp.GradScaler(world.device.type, enabled=cfg.precision == "fp16")
    start = 0
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=world.device, weights_only=True)
        if state.get("format") != CKPT_FORMAT:
            raise InputError(f"{ckpt_path} is not a pretraining checkpoint (format {state.get('format')!r})")
        if state["pretrain_config"] != asdict(cfg):
            raise InputError(
                f"{ckpt_path} was written by a run with another configuration: {state['pretrain_config']}; "
                "resume with the same options or use a new output folder"
            )
        for name in ("encoder", "target_encoder", "predictor"):
            getattr(model, name).load_state_dict(state[name])
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"].cpu())
        start = state["step"]
    net = DistributedDataParallel(model) if world.size > 1 else model
    net = torch.compile(net) if cfg.compile else net
    part = rank_slice(world, cfg.batch_size)
    batches = [step_indices(cfg, step, len(data))[part].tolist() for step in range(start, cfg.steps)]
    loader = DataLoader(data, batch_sampler=batches, num_workers=cfg.workers, pin_memory=world.device.type == "cuda")
    autocast = torch.autocast(world.device.type, dtype=PRECISIONS[cfg.precision], enabled=cfg.precision != "fp32")
    model.train()
    log = open(out / "log.jsonl", "a") if world.main else None
    bar = tqdm(total=cfg.steps, initial=start, desc="pretrain", disable=not (progress and world.main), dynamic_ncols=True)
    try:
        tic = time.perf_counter()
        for step, (x, *_) in enumerate(loader, start=start):
            lr = cosine_lr(step, cfg.steps, cfg.warmup_steps, cfg.lr)
            for group in opt.param_groups:
                group["lr"] = lr
            mask = step_mask(cfg, step)
            mask = mask[part] if mask.dim() == 2 else mask
            with autocast:
                loss, rep_std = net(x.to(world.device, non_blocking=True), mask.to(world.device))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            momentum = ema_momentum(step, cfg.steps)
            model.update_teacher(momentum)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower --lr or use --precision fp32")
            rate = cfg.batch_size / (time.perf_counter() - tic)
            tic = time.perf_counter()
            if world.main:
                log.write(json.dumps({
                    "step": step, "loss": loss.item(), "lr": lr, "momentum": momentum, "ecg_per_s": rate,
                    "peak_mem_mb": _peak_memory_mb(world.device), "rep_std": rep_std.item(),
                }) + "\n")
                bar.set_postfix(loss=f"{loss.item():.4f}", ecg_s=f"{rate:.0f}", std=f"{rep_std.item():.3f}")
                bar.update(1)
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                if world.main:
                    log.flush()
                    save_checkpoint(ckpt_path, model, opt, scaler, cfg, step + 1)
                barrier(world)
    finally:
        bar.close()
        if log is not None:
            log.close()
    if world.main:
        plot_log(out / "log.jsonl", out / "curves.png")
    return model
