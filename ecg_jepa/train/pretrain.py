"""Self-supervised pretraining of ECG-JEPA: AMP, optional torch.compile, torchrun DDP, exact resume,
preemption-safe checkpoints, and a training step that never waits for the GPU.

Each step's global batch and mask are functions of (seed, step) alone. Rank r of W takes the r-th slice of
the global batch (the role of a DistributedSampler with set_epoch, but also exact when a run resumes in the
middle of an epoch), every rank uses the same mask, DDP averages the gradients, so W processes take the
steps one process would take on the same global batch; the EMA teacher, updated from identical students,
stays identical on every rank. Rank 0 alone logs and writes checkpoints.

The step reads no tensor back: batches are checked and their masks prepared by the loader's workers
(:mod:`.loader`); the loss and the representation std stay on the device until the log is written, every
``log_every`` steps, the only time the host waits for the GPU. Checkpoints are written after the first
step, every ``checkpoint_every`` steps, every ``checkpoint_minutes`` and on SIGTERM/SIGINT (then the run
stops with :class:`Preempted`); the previous checkpoint is kept until the new one is complete
(:mod:`.run_folder`). Before each step the ranks agree (:meth:`~.distributed.World.agree`, a host-side
gloo all-gather) on whether any of them was signalled or lost its loader, so a signal that reaches one rank,
all of them or only their loader workers, in any order, stops every rank after the same step, with one
checkpoint of it.
"""
from __future__ import annotations

import functools
import json
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..atomic import load_torch
from ..constants import N_SLOTS
from ..errors import InputError, RunError
from ..jsonl import read_jsonl
from ..model.jepa import JEPA
from ..model.masks import multiblock_mask, random_mask
from .distributed import World
from .loader import StepBatches, quiet_worker_deaths, step_loader, to_device
from .metrics import bf16_peak_tflops, peak_memory_mb, step_flops
from .recipe import DEFAULT_MASK, DEFAULT_PRESET, MASKS, RECIPES, WEIGHT_DECAY, cosine_lr, default_warmup, ema_momentum
from .run_folder import LOG as LOG_NAME, RunFolder

CKPT_FORMAT = "ecg-jepa-pretrain/1"
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LOADER_GRACE = 2.0  # seconds a rank whose loader failed waits for the signal that may have caused it
# The fields that decide what a run computes: a resume must match them; the others may change.
IDENTITY = ("preset", "mask", "per_sample_masks", "steps", "batch_size", "lr", "warmup_steps", "weight_decay",
            "precision", "seed")
_DEFAULT = RECIPES[(DEFAULT_PRESET, DEFAULT_MASK)]


@dataclass
class PretrainConfig:
    """A pretraining run: ``steps`` optimizer steps of ``batch_size`` ECGs (global, over all ranks);
    ``lr`` is the peak of the per-step cosine schedule (:func:`.recipe.cosine_lr`), reached after
    ``warmup_steps``. The defaults are the default preset's recipe (:mod:`.recipe`); ``resolve_recipe``
    gives another's. ``compile``: torch.compile the block stacks (one dynamic-shape graph each, whatever
    the mask). The attention backend is a runtime setting, no part of the run (:func:`ecg_jepa.use_backend`)."""

    preset: str = DEFAULT_PRESET
    mask: str = DEFAULT_MASK
    per_sample_masks: bool = False
    steps: int = _DEFAULT.steps
    batch_size: int = _DEFAULT.batch_size
    lr: float = _DEFAULT.lr
    warmup_steps: int = default_warmup(_DEFAULT.steps)
    weight_decay: float = WEIGHT_DECAY
    precision: str = "fp32"
    compile: bool = False
    seed: int = 0
    checkpoint_every: int = 100
    checkpoint_minutes: float = 10.0
    log_every: int = 10
    workers: int = 1

    def __post_init__(self) -> None:
        if self.mask not in MASKS:
            raise InputError(f"mask must be one of {', '.join(MASKS)}, got {self.mask!r}")
        if self.per_sample_masks and self.mask != "random":
            raise InputError("per-sample masks need --mask random (multi-block unions differ in size per sample)")
        if self.steps < 1 or self.batch_size < 1:
            raise InputError("steps and batch_size must be positive")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.workers < 0 or self.log_every < 1 or self.checkpoint_every < 1:
            raise InputError("workers must be ≥ 0, log_every and checkpoint_every ≥ 1")


class Preempted(Exception):
    """The run was stopped by a signal after writing a checkpoint; ``--resume`` continues it."""

    def __init__(self, step: int, signum: int, out: Path) -> None:
        self.step, self.signum = step, signum
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}: checkpoint saved in {out}; "
                         "rerun with --resume to continue")


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


def _rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state) -> None:
    if isinstance(state, torch.Tensor):  # checkpoints of earlier versions: the CPU state alone
        state = {"cpu": state}
    torch.set_rng_state(state["cpu"].cpu())
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def checkpoint_payload(model: JEPA, opt, scaler, cfg: PretrainConfig, step: int) -> dict:
    """Everything a resume needs; ``load_encoder`` reads its student encoder."""
    return {
        "format": CKPT_FORMAT,
        "config": model.encoder.config.to_dict(),
        "encoder": model.encoder.state_dict(),
        "target_encoder": model.target_encoder.state_dict(),
        "predictor": model.predictor.state_dict(),
        "optimizer": opt.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": _rng_state(),
        "pretrain_config": asdict(cfg),
        "step": step,
    }


def _restore(state: dict, model: JEPA, opt, scaler, cfg: PretrainConfig, source: Path) -> int:
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
        raise InputError(f"{source} is not a pretraining checkpoint (format "
                         f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r})")
    saved = state["pretrain_config"]
    mismatch = {k: (saved.get(k), getattr(cfg, k)) for k in IDENTITY if saved.get(k) != getattr(cfg, k)}
    if mismatch:
        diff = ", ".join(f"{k} {a!r} (now {b!r})" for k, (a, b) in mismatch.items())
        raise InputError(f"{source} was written by a run with another configuration: {diff}; resume with the same "
                         "options, or use a new --out")
    for name in ("encoder", "target_encoder", "predictor"):
        getattr(model, name).load_state_dict(state[name])
    opt.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    _set_rng_state(state["rng"])
    return int(state["step"])


class StopSignals:
    """While active, SIGTERM and SIGINT only set ``signum`` (the loop checkpoints and stops at the end of
    the step); outside the main thread nothing is installed."""

    def __init__(self) -> None:
        self.signum = 0
        self._old: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
        self.signum = signum

    def wait(self, seconds: float) -> int:
        """Wait up to ``seconds`` for a signal; ``signum`` (0: none came)."""
        deadline = time.monotonic() + seconds
        while not self.signum and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def plot_log(log_path: Path, png: Path) -> None:
    """Loss, learning rate, EMA momentum and representation std against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl(log_path)
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


def warm_up_kernels(model: JEPA, device: torch.device, precision: str) -> str | None:
    """Compile every Triton CroPA variant the run can meet (the fused kernels' slot tiles, the split
    backend's column kernels; forward and backward) before the first step, so none compiles in the middle
    of training; a line saying what was warmed, or None."""
    if device.type != "cuda":
        return None
    from ..ops.cropa import DISPATCH
    from ..ops.registry import InputSpec

    cfg = model.encoder.config
    dtype = PRECISIONS[precision]
    head_dim, n_leads = cfg.dim // cfg.num_heads, len(cfg.leads)
    backend = model.encoder.encoder_blocks.blocks[0].attn.backend  # None: the runtime setting
    chosen = {grad: DISPATCH.select(InputSpec.describe(device, dtype, (1, cfg.num_heads, n_leads * N_SLOTS, head_dim),
                                                       grad, n_leads), backend)
              for grad in (False, True)}  # the teacher's forward runs without gradients, the student's with
    done = []
    tic = time.perf_counter()
    with torch.random.fork_rng(devices=[device]):
        for name in ("triton", "split"):
            if name not in chosen.values():
                continue
            from importlib import import_module

            module = import_module(f"..ops.cropa.{name}", __package__)
            count = module.warm_up(device, dtype, head_dim, cfg.num_heads, n_leads, grad=chosen[True] == name)
            done.append(f"{name} at {count} slot counts ({'forward and backward' if chosen[True] == name else 'forward'})")
    if not done:
        return None
    return f"warmed CroPA attention's Triton kernels: {' and '.join(done)}, in {time.perf_counter() - tic:.1f} s"


def pretrain(
    cfg: PretrainConfig, data: Dataset, out: str | Path, resume: bool = False, progress: bool = True,
    world: World = World(), overwrite: bool = False, say=print, banner: str | None = None,
) -> JEPA:
    """Train ``cfg.steps`` steps on ``data`` (items ``(x, ...)``, x (L, 2500)); checkpoints, ``log.jsonl``,
    ``curves.png`` and ``summary.json`` go to ``out`` (rank 0). A folder that holds a run needs ``resume``
    (continue from its newest readable checkpoint) or ``overwrite``; a group torchrun restarted resumes by
    itself. ``banner`` is said once the run is sure to start (after the folder and the resumed checkpoint's
    config are accepted). Raises :class:`Preempted` after a SIGTERM/SIGINT to any rank, once the checkpoint
    of the last step every rank completed is written, and :class:`~ecg_jepa.errors.RunError` when a rank
    stops answering or the checkpoint cannot be written."""
    folder = RunFolder(out)
    say = say if world.main else (lambda *a, **k: None)
    if world.restart:
        say(f"torchrun restarted the group (restart {world.restart}): resuming from the newest checkpoint in {out}")
        resume, overwrite = True, False
    try:
        word, state = None, None
        if world.main:
            try:
                folder.lock()
                state = folder.start(resume, overwrite, say)
                word = folder.resumed_from
            except InputError as e:
                word = e
        word = world.from_main(word, "the wait for rank 0 to open the run folder")
        if isinstance(word, InputError):
            raise word
        if not world.main and word is not None:
            state = load_torch(word, "pretraining checkpoint")
        return _train(cfg, data, folder, state, progress, world, say, banner)
    finally:
        folder.unlock()


def _train(cfg: PretrainConfig, data: Dataset, folder: RunFolder, state: dict | None, progress: bool, world: World,
           say, banner: str | None = None) -> JEPA:
    device = world.device
    torch.manual_seed(cfg.seed)
    model = JEPA(cfg.preset).to(device)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999),
                            fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    start = _restore(state, model, opt, scaler, cfg, folder.path) if state is not None else 0
    if banner:
        say(banner)
    if world.main and state is not None:
        folder.truncate_log(start)
        say(f"resuming at step {start}")
    if start >= cfg.steps:
        return model
    warmed = warm_up_kernels(model, device, cfg.precision)
    if warmed:
        say(warmed)
    if cfg.compile:
        model.compile_blocks()
    with world.collective("DDP's broadcast of rank 0's weights"):
        net = DistributedDataParallel(model) if world.size > 1 else model
    part = rank_slice(world, cfg.batch_size)
    batches = StepBatches(data, functools.partial(step_indices, cfg, n=len(data)), functools.partial(step_mask, cfg),
                          part)
    loader = step_loader(batches, start, cfg.steps, cfg.workers, pin=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=PRECISIONS[cfg.precision], enabled=cfg.precision != "fp32")
    peak = bf16_peak_tflops(device)
    model.train()
    bar = tqdm(total=cfg.steps, initial=start, desc="pretrain", disable=not (progress and world.main), dynamic_ncols=True)
    pending: list[tuple] = []
    intervals: list[dict] = []
    tic = last_ckpt = time.perf_counter()

    def log_interval() -> None:
        nonlocal pending, tic
        if pending:
            intervals.append(_write_rows(pending, time.perf_counter() - tic, cfg, model, device, peak, folder, world))
            bar.update(len(pending))
            last = intervals[-1]
            bar.set_postfix(loss=f"{last['loss']:.4f}", ecg_s=f"{last['ecg_per_s']:.0f}",
                            **({"mfu": f"{last['mfu']:.0%}"} if last["mfu"] else {}))
        pending, tic = [], time.perf_counter()

    def checkpoint(step: int) -> None:
        """Rank 0 writes it (once per step: a stop right after a save does not write it again); the others
        wait for its word, and every rank stops if the write failed."""
        nonlocal last_ckpt, saved
        if step == saved:
            return
        failed = None
        if world.main:
            try:
                folder.save(checkpoint_payload(model, opt, scaler, cfg, step))
            except OSError as e:
                failed = (f"rank 0 could not write the checkpoint of step {step} in {folder.path}: {e}; the "
                          "previous checkpoint is kept: fix the cause and rerun with --resume")
        failed = world.from_main(failed, f"the wait for rank 0's checkpoint of step {step}")
        if failed:
            raise RunError(failed)
        last_ckpt, saved = time.perf_counter(), step

    done = saved = start
    batches_in = iter(loader)
    quiet_worker_deaths(batches_in)
    try:
        with StopSignals() as stop:
            while done < cfg.steps:
                lost = None
                try:
                    batch = next(batches_in)
                except Exception as e:  # workers killed by the signal that stops the run, or a real failure
                    lost = e
                    stop.wait(LOADER_GRACE)  # the signal may reach this process just after its workers
                due = world.main and time.perf_counter() - last_ckpt > 60 * cfg.checkpoint_minutes
                bad = lost is None and "error" in batch
                flags = world.agree(done, (stop.signum, lost is not None, due, bad))
                signum = max(row[0] for row in flags)
                if signum:  # any rank was told to stop: all stop after the same step, with its checkpoint
                    log_interval()
                    checkpoint(done)
                    raise Preempted(done, signum, folder.path)
                if lost is not None:
                    raise lost
                if any(row[1] for row in flags):
                    lost_on = [r for r, row in enumerate(flags) if row[1]]
                    raise RunError(f"rank {lost_on[0]}'s data loader failed before step {done} (its own error says "
                                   "why); every rank stops")
                if bad:
                    raise InputError(batch["error"])
                if any(row[3] for row in flags):
                    bad_on = [r for r, row in enumerate(flags) if row[3]]
                    raise InputError(f"rank {bad_on[0]}'s part of step {done}'s batch cannot be used (its error says "
                                     "why); every rank stops")
                if any(row[2] for row in flags):
                    log_interval()
                    checkpoint(done)
                step = batch["step"]
                x, mask = to_device(batch, device)
                lr = cosine_lr(step, cfg.steps, cfg.warmup_steps, cfg.lr)
                for group in opt.param_groups:
                    group["lr"] = lr
                with world.collective(f"step {step}'s gradient all-reduce (DDP)"):
                    with autocast:
                        loss, rep_std = net(x, mask, trusted=True)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                momentum = ema_momentum(step, cfg.steps)
                model.update_teacher(momentum)
                pending.append((step, lr, momentum, loss.detach(), rep_std.detach(), mask.n_visible))
                done = step + 1
                flush = done % cfg.log_every == 0 or done == cfg.steps or done == start + 1
                save = done == 1 or done % cfg.checkpoint_every == 0 or done == cfg.steps
                if flush or save:
                    log_interval()
                if save:
                    checkpoint(done)
    finally:
        bar.close()
        if hasattr(batches_in, "_shutdown_workers"):  # workers stop now, not whenever the iterator is collected
            batches_in._shutdown_workers()
        if world.main:
            plot_log(folder.path / LOG_NAME, folder.path / "curves.png")
            _write_summary(intervals, cfg, device, folder, say)
    return model


def _write_rows(pending: list[tuple], elapsed: float, cfg: PretrainConfig, model: JEPA, device: torch.device,
                peak: float | None, folder: RunFolder, world: World) -> dict:
    """Read the interval's losses back (the one wait for the GPU), check them, log one row per step."""
    losses = torch.stack([p[3].float() for p in pending]).tolist()
    stds = torch.stack([p[4].float() for p in pending]).tolist()
    for (step, *_), loss in zip(pending, losses):
        if loss != loss or abs(loss) == float("inf"):
            raise FloatingPointError(f"loss became {loss} at step {step}; lower --lr or use --precision fp32")
    step_s = elapsed / len(pending)
    ecg_s = cfg.batch_size / step_s
    flops = sum(step_flops(model, cfg.batch_size, p[5]) for p in pending) / len(pending)
    mfu = flops / step_s / (peak * 1e12) if peak else None
    mem = peak_memory_mb(device)
    rows = [{"step": step, "loss": loss, "lr": lr, "momentum": mom, "ecg_per_s": ecg_s, "step_ms": 1e3 * step_s,
             "mfu": mfu, "peak_mem_mb": mem, "rep_std": std, "visible_slots": n_vis}
            for (step, lr, mom, _, _, n_vis), loss, std in zip(pending, losses, stds)]
    if world.main:
        folder.append_log(rows)
    return {"steps": len(rows), "seconds": elapsed, "ecg_per_s": ecg_s, "mfu": mfu, "peak_mem_mb": mem,
            "loss": losses[-1]}


def _write_summary(intervals: list[dict], cfg: PretrainConfig, device: torch.device, folder: RunFolder, say) -> None:
    """Steps of the run (across resumes), and this process's throughput without its first interval (warm-up
    and compilation), MFU, peak memory."""
    if not intervals:
        return
    steady = intervals[1:] or intervals
    steps = sum(i["steps"] for i in steady)
    seconds = sum(i["seconds"] for i in steady)
    mfus = [i["mfu"] * i["seconds"] for i in steady if i["mfu"] is not None]
    logged = folder.logged_steps()  # a line cut off by a kill is skipped: the summary must not hide the error
    summary = {
        "steps": max(logged) + 1 if logged else 0,  # the run's, across resumes (each step is logged once)
        "steps_this_process": sum(i["steps"] for i in intervals), "ecg_per_s": cfg.batch_size * steps / seconds,
        "step_ms": 1e3 * seconds / steps, "mfu": sum(mfus) / seconds if mfus else None,
        "peak_mem_mb": max(i["peak_mem_mb"] for i in intervals), "device": str(device),
        "precision": cfg.precision, "compile": cfg.compile, "batch_size": cfg.batch_size,
    }
    (folder.path / "summary.json").write_text(json.dumps(summary, indent=1))
    mfu = f", {summary['mfu']:.1%} model-FLOP utilisation" if summary["mfu"] is not None else ""
    say(f"throughput {summary['ecg_per_s']:,.0f} ECG/s ({summary['step_ms']:.1f} ms/step{mfu}), "
        f"peak memory {summary['peak_mem_mb']:,.0f} MB")
