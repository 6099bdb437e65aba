"""The ``ecg-jepa`` command: the argument parser and one handler per subcommand, which turns the options into
library calls and prints or writes what they return.

Bad input (an :class:`~ecg_jepa.errors.InputError` from the library) is printed as one line, exit status 2;
a run stopped by SIGTERM/SIGINT after its checkpoint exits with 128 + the signal; a run stopped from outside
(:class:`~ecg_jepa.errors.RunError`: a rank that stopped answering, a checkpoint that could not be written)
prints one line and exits with 1, as does a command that skipped unreadable records (it says how many);
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from .constants import FS, LEADS, N_SAMPLES, N_SLOTS
from .errors import InputError, RunError
from .jsonl import write_jsonl
from .model.jepa import PRESETS
from .ops.cropa import BACKENDS
from .ops.setting import ENV, current_backend, use_backend
from .train.distributed import CHECKPOINT_WAIT, DEFAULT_TIMEOUT
from .train.recipe import (
    DEFAULT_MASK,
    DEFAULT_PRESET,
    FINETUNE,
    LINEAR_PROBE,
    LR_START,
    MASKS,
    WARMUP_SHARE,
    number,
    recipe_values,
)


def _pretrain_data(args: argparse.Namespace):
    """(dataset, what it is) for pretrain: shards (optionally some folds) or synthetic ECGs."""
    if not args.data:
        from .data.synthetic import SyntheticECG

        return SyntheticECG(args.train_size, seed=args.seed), "synthetic ECGs"
    from .data.shards import ShardDataset
    from .eval.downstream import parse_folds

    data = ShardDataset(args.data)
    if not args.folds:
        return data, f"ECGs from the shards in {args.data}"
    return data.where(args.split_field, parse_folds(args.folds)), f"ECGs from the shards in {args.data} ({args.split_field} {args.folds})"


def _pretrain(args: argparse.Namespace) -> int:
    """The run under --backend (restored afterwards: ``main`` may be called in-process)."""
    with use_backend(attention=args.backend):
        _check_backend_settings()
        return _pretrain_run(args)


def _check_backend_settings() -> None:
    """A backend named by the environment must exist: said before the run folder is touched (an --overwrite
    would already have removed the old run), not at the first step."""
    from .ops.patch_embed import BACKENDS as EMBED_BACKENDS

    for op, table in (("attention", BACKENDS), ("embed", EMBED_BACKENDS)):
        name = current_backend(op)
        if name != "auto" and name not in table:
            raise InputError(f"${ENV[op]} = {name!r} names no {op} backend; set it to auto or one of "
                             f"{', '.join(table)}")


def _pretrain_run(args: argparse.Namespace) -> int:
    from .data.synthetic import CLASS_NAMES, N_CLASSES, SyntheticECG
    from .eval.probe import probe_against_random_init
    from .model.checkpoint import save_encoder
    from .train.distributed import close_world, init_world
    from .train.pretrain import Preempted, PretrainConfig, pretrain
    from .train.recipe import resolve_recipe

    if args.threads:
        torch.set_num_threads(args.threads)
    world = init_world(args.device, args.collective_timeout)
    say = print if world.main else (lambda *a, **k: None)
    data, what = _pretrain_data(args)
    plan = resolve_recipe(args.preset, args.mask, len(data), batch_size=args.batch_size, lr=args.lr, epochs=args.epochs,
                          steps=args.steps, warmup_epochs=args.warmup_epochs)
    cfg = PretrainConfig(
        preset=args.preset, mask=args.mask, per_sample_masks=args.per_sample_masks, steps=plan.steps,
        batch_size=plan.batch_size, lr=plan.lr, warmup_steps=plan.warmup_steps,
        precision=args.precision or ("bf16" if world.device.type == "cuda" else "fp32"), compile=args.compile,
        seed=args.seed, workers=args.workers, checkpoint_every=args.checkpoint_every,
        checkpoint_minutes=args.checkpoint_minutes, log_every=args.log_every,
    )
    out = Path(args.out)
    banner = (f"pretraining ECG-JEPA '{cfg.preset}' on {len(data)} {what}: {cfg.steps} steps of {cfg.batch_size} "
              f"({cfg.steps / plan.per_epoch:.1f} epochs), {cfg.mask} masks, lr {cfg.lr:g}, {cfg.precision}, "
              f"{world.size} process(es) on {world.device} -> {out}/")
    try:  # the banner comes once the run folder and a resumed checkpoint are accepted: a refused run never looks started
        model = pretrain(cfg, data, out, resume=args.resume, overwrite=args.overwrite, world=world, say=say,
                         banner=banner)
    except Preempted as e:  # every rank says it: each one exits 128 + signal
        print(f"ecg-jepa pretrain{f' (rank {world.rank})' if world.size > 1 else ''}: {e}")
        return 128 + e.signum
    finally:
        close_world(world)
    if not world.main:
        return 0
    enc_path = save_encoder(model.encoder, out / "encoder.pt")
    print(f"encoder checkpoint: {enc_path} (load with ecg_jepa.load_encoder); curves: {out}/curves.png")
    if args.probe_train == 0 or args.data:
        return 0
    print(f"linear probe on {len(CLASS_NAMES)} classes ({', '.join(CLASS_NAMES)}): "
          f"{args.probe_train} train / {args.probe_test} test ECGs")
    results = probe_against_random_init(
        model.encoder, SyntheticECG(args.probe_train, seed=10_000 + cfg.seed),
        SyntheticECG(args.probe_test, seed=20_000 + cfg.seed), N_CLASSES, seed=cfg.seed,
    )
    for name, result in results.items():
        print(f"  {name:<12} {result}")
    return 0


def _prepare_data(args: argparse.Namespace) -> int:
    from .data.shards import PrepareOptions, prepare_data

    options = PrepareOptions(
        leads=tuple(args.leads.split(",")), fs=args.fs, seconds=args.seconds, pad=args.pad,
        band_pass=args.band_pass, zscore=args.zscore,
    )
    counts = prepare_data(args.src, args.out, options, workers=args.workers, shard_size=args.shard_size)
    print(f"{args.out}: {counts['prepared']} records prepared, {counts['failed']} failed"
          + (f" (file and reason of each in {args.out}/failures.jsonl)" if counts["failed"] else "")
          + f", {counts['skipped']} already done" + (f" ({counts['retried']} earlier failures tried again)"
                                                      if counts.get("retried") else ""))
    return 1 if counts["failed"] else 0


def _open(args: argparse.Namespace, scratch: str):
    """(encoder, its lead names, the data) for embed/probe/finetune."""
    from .eval.downstream import open_data
    from .model.checkpoint import load_encoder

    encoder = load_encoder(args.checkpoint, leads=args.leads)
    names = tuple(LEADS[i] for i in encoder.config.leads)
    data = open_data(args.data, names, pad=args.pad, scratch=scratch)
    if data.failures:
        print(f"{len(data.failures)} record(s) could not be read and are left out, e.g. {data.failures[0]['reason']}",
              file=sys.stderr)
    return encoder, data


def _embed(args: argparse.Namespace) -> int:
    import numpy as np

    from .eval.probe import embed_dataset, random_init

    with tempfile.TemporaryDirectory(prefix="ecg-jepa-") as scratch:
        encoder, data = _open(args, scratch)
        if args.random_init is not None:
            encoder = random_init(encoder, args.random_init)
        feats, idx = embed_dataset(encoder, data, batch_size=args.batch_size, desc="embed")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, feats)
    ids = out.with_suffix(".ids.txt")
    ids.write_text("".join(f"{data.records[i]['id']}\n" for i in idx))
    what = f"a random-init encoder (seed {args.random_init})" if args.random_init is not None else args.checkpoint
    print(f"{out}: {feats.shape[0]} embeddings of width {feats.shape[1]} by {what}; record ids in {ids}")
    if data.failures:
        failed = out.with_suffix(".failures.jsonl")
        write_jsonl(failed, data.failures)
        print(f"{len(data.failures)} record(s) failed and were left out: file and reason of each in {failed}")
        return 1
    return 0


def _downstream(args: argparse.Namespace) -> int:
    """probe and finetune: the task and splits said, the protocol run (:func:`~.eval.downstream.downstream`),
    its scores printed, its report and ROC curves written."""
    from .eval.downstream import downstream, plot_roc, resolve_task, split_by_field, write_report

    with tempfile.TemporaryDirectory(prefix="ecg-jepa-") as scratch:
        encoder, data = _open(args, scratch)
        task = resolve_task(args.task, args.labels, args.label_field, data.records)
        splits = split_by_field(data.records, args.split_field, args.train, args.val, args.test)
        sizes = {k: len(v) for k, v in splits.items()}
        print(f"{args.command}: {task.kind} task over {', '.join(task.names)}; {args.split_field} train {args.train} "
              f"({sizes['train']}), validation {args.val} ({sizes['val']}), test {args.test} ({sizes['test']})")
        if args.command == "finetune":
            results = downstream(encoder, data, task, splits, method="finetune", epochs=args.epochs, lr=args.lr,
                                 batch_size=args.batch_size, seed=args.seed)
        else:
            results = downstream(encoder, data, task, splits, classifier=args.classifier, seed=args.seed)
    print(f"  {'encoder':<12} test scores (chosen on validation)")
    for name, result in results.items():
        print(f"  {name:<12} {result}")
    how = f"{args.command}" + (f" ({args.classifier})" if args.command == "probe" else f" (lr {args.lr:g}, {args.epochs} epochs)")
    report = write_report(args.out, task, sizes, results, how, failures=data.failures)
    y_test = task.targets([data.records[i] for i in splits["test"]])
    plot_roc(Path(args.out).with_suffix(".png"), task, y_test, results)
    print(f"report: {report}; ROC curves: {Path(args.out).with_suffix('.png')}")
    if data.failures:
        print(f"{len(data.failures)} record(s) failed and were left out (listed in the report)")
        return 1
    return 0


def _backends(args: argparse.Namespace) -> int:
    from .ops.cropa import DISPATCH
    from .ops.registry import InputSpec

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    shape = (args.batch, args.heads, args.leads * args.slots, args.head_dim)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"(no GPU here: the inputs are described as on a GPU of compute capability "
              f"{'.'.join(map(str, args.capability))})")
    print(DISPATCH.explain(InputSpec.describe(args.device, dtype, shape, args.grad, args.leads, args.capability)))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .benchmarks.bench_cropa import ROW_PASS, SPLIT_LIBRARY
    from .benchmarks.suite import PARTS, run

    parts = tuple(args.only.split(","))
    impls = tuple(args.backends.split(",")) if args.backends else None
    for name, given, known in (("part", parts, PARTS), ("backend", impls or (), (*BACKENDS, "dense", *ROW_PASS, SPLIT_LIBRARY))):
        unknown = [g for g in given if g not in known]
        if unknown:
            raise InputError(f"unknown {name} {', '.join(unknown)}; choose from {', '.join(known)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    md, stem = run(quick=args.quick, device=args.device, out=args.out, budget=args.budget,
                   parts=parts, shapes=args.shapes, impls=impls)
    print(md)
    print(f"results: {stem}.{{json,csv,md,png}}")
    return 0


class _Help(argparse.RawDescriptionHelpFormatter):
    """Each option's default, once: appended unless the help text already says it (or there is none)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False \
                or action.default == argparse.SUPPRESS or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _count(minimum: int):
    """An argparse type: an int ≥ ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be ≥ {minimum}, got {value}")
        return value
    return parse


def _capability(text: str) -> tuple[int, int]:
    """A compute capability such as 9.0."""
    major, dot, minor = text.partition(".")
    if not (major.isdigit() and dot and minor.isdigit()):
        raise argparse.ArgumentTypeError(f"a compute capability is MAJOR.MINOR, such as 9.0 or 8.0; got {text!r}")
    return int(major), int(minor)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
    return value


def _device(text: str) -> str:
    if text not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"choose cpu or cuda, got {text!r}")
    return text


def _add_pretrain(sub) -> None:
    p = sub.add_parser(
        "pretrain", formatter_class=_Help,
        help="pretrain ECG-JEPA, then linear-probe it against a random-init encoder",
        description="Pretrain ECG-JEPA on shards from `ecg-jepa prepare-data` or on built-in synthetic 12-lead ECGs,\n"
        "with checkpoints that survive kills and pre-emption, then (on synthetic data) compare a linear probe\n"
        "of the pretrained encoder with the same probe on a randomly initialised one.\n\n"
        "With no options: the tiny preset, a few minutes on 2 CPU cores. The paper's: --preset vit-b.\n"
        "Several GPUs: torchrun --nproc_per_node=N -m ecg_jepa pretrain ...",
    )
    g = p.add_argument_group("model and recipe (default: the preset's recipe, ecg_jepa.train.recipe; vit-b's is the "
                             "paper's, tiny's a few CPU minutes)")
    g.add_argument("--preset", default=DEFAULT_PRESET, choices=list(PRESETS), help="model size (vit-b: the paper's)")
    g.add_argument("--mask", default=DEFAULT_MASK, choices=MASKS, help="masking strategy")
    g.add_argument("--per-sample-masks", action="store_true",
                   help="a mask per ECG (random masks only) instead of one per batch as the original")
    g.add_argument("--steps", type=int, default=None, metavar="N", help=f"optimizer steps ({recipe_values('steps')})")
    g.add_argument("--epochs", type=_count(1), default=None, metavar="N",
                   help=f"epochs instead of steps ({recipe_values('epochs')})")
    g.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help=f"global ECGs per step, split over processes ({recipe_values('batch_size')})")
    g.add_argument("--lr", type=_positive_float, default=None,
                   help=f"peak learning rate, cosine schedule ({recipe_values('lr')})")
    g.add_argument("--warmup-epochs", type=float, default=None, metavar="N",
                   help=f"linear warm-up from {number(LR_START)}: the recipe's warm-up epochs with --epochs "
                        f"({recipe_values('warmup_epochs')}), else {100 * WARMUP_SHARE:g}%% of the steps")
    g.add_argument("--seed", type=int, default=0, help="seed of weights, data order and masks")
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None, metavar="SHARDS", help="shards from `ecg-jepa prepare-data` "
                   "(without it: synthetic ECGs)")
    g.add_argument("--folds", default=None, help="with --data: pretrain only on these folds, e.g. 1-7")
    g.add_argument("--split-field", default="strat_fold", metavar="FIELD", help="with --folds: the label holding the fold")
    g.add_argument("--train-size", type=_count(1), default=4096, metavar="N", help="synthetic ECGs to pretrain on")
    g.add_argument("--probe-train", type=_count(0), default=1024, metavar="N",
                   help="synthetic ECGs to fit the probe on (0: no probe; none after --data)")
    g.add_argument("--probe-test", type=_count(1), default=1024, metavar="N", help="synthetic ECGs to score the probe on")
    g.add_argument("--workers", type=_count(0), default=1, metavar="N", help="data-loading processes per rank")
    g = p.add_argument_group("run folder and checkpoints")
    g.add_argument("--out", default="runs/pretrain", metavar="DIR",
                   help="the run folder: checkpoints, log.jsonl, curves.png, summary.json, encoder.pt")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest readable checkpoint (fresh if it has none)")
    g.add_argument("--overwrite", action="store_true", help="start afresh in an --out that holds a run, deleting it")
    g.add_argument("--checkpoint-every", type=_count(1), default=100, metavar="STEPS", help="steps between checkpoints")
    g.add_argument("--checkpoint-minutes", type=_positive_float, default=10.0, metavar="MIN",
                   help="minutes between checkpoints (also after the first step and on SIGTERM/SIGINT)")
    g.add_argument("--log-every", type=_count(1), default=10, metavar="STEPS",
                   help="steps between log writes (the only time the host waits for the GPU)")
    g.add_argument("--collective-timeout", type=_positive_float, default=DEFAULT_TIMEOUT, metavar="S",
                   help="with torchrun: seconds any rank waits for the others before the run stops with an error "
                        f"naming the rank that stopped answering (rank 0's checkpoint writes are waited for at least "
                        f"{CHECKPOINT_WAIT / 60:g} min; default: %(default)g)")
    g = p.add_argument_group("speed")
    g.add_argument("--device", type=_device, default=None, help="cpu or cuda (default: cuda when there is a GPU)")
    g.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16"],
                   help="autocast precision (default: bf16 on a GPU, fp32 on the CPU; fp16 uses a grad scaler)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the block stacks (one dynamic-shape graph each)")
    g.add_argument("--backend", default=None, choices=["auto", *BACKENDS],
                   help=f"CroPA attention backend (see `ecg-jepa backends`; a setting of this run, not "
                        f"saved in checkpoints; default: ${ENV['attention']}, else auto)")
    g.add_argument("--threads", type=_count(0), default=0, metavar="N", help="torch CPU threads (0: torch's own choice)")
    p.set_defaults(func=_pretrain)


def _add_data_commands(sub) -> None:
    def common(p: argparse.ArgumentParser, data_positional: bool) -> None:
        p.add_argument("checkpoint", help="an encoder checkpoint (ours or the original release's)")
        if data_positional:
            p.add_argument("data", nargs="+", metavar="DATA", help="shards folders, or raw data folders / records")
        else:
            p.add_argument("--data", nargs="+", required=True, metavar="DATA",
                           help="shards folders from prepare-data, or raw labelled data folders (several: pooled)")
        p.add_argument("--leads", default=None, help="reduced-lead model, e.g. II,V1 (default: the checkpoint's leads)")
        p.add_argument("--pad", action="store_true", help="zero-pad raw records shorter than 10 s")

    p = sub.add_parser(
        "embed", formatter_class=_Help, help="mean-pooled encoder representations of ECGs, to a .npy file",
        description="Embed every ECG of DATA (shards from prepare-data, or folders/records read_record reads,\n"
        "prepared on the fly) with the encoder: one (D,) row per ECG, record ids beside it. Records that\n"
        "cannot be read are left out and listed in OUT.failures.jsonl (exit status 1).",
    )
    common(p, data_positional=True)
    p.add_argument("--out", required=True, metavar="FILE.npy", help="output .npy (ids beside it, as .ids.txt)")
    p.add_argument("--batch-size", type=_count(1), default=64, metavar="N", help="ECGs per forward pass")
    p.add_argument("--random-init", type=int, default=None, metavar="SEED",
                   help="embed with a randomly initialised encoder of the checkpoint's architecture (a baseline)")
    p.set_defaults(func=_embed)

    for name, helptext in (("probe", "linear probe of a frozen encoder on labelled ECGs"),
                           ("finetune", "full fine-tuning of an encoder on labelled ECGs")):
        p = sub.add_parser(
            name, formatter_class=_Help, help=helptext + " (beside the same on a random-init encoder)",
            description=helptext[0].upper() + helptext[1:] + ". Splits come from a label field (PTB-XL's\n"
            "strat_fold by default); the model is chosen on the validation split and only then scored on the\n"
            "test split. The same procedure on a randomly initialised encoder of the same architecture is\n"
            "always printed beside it. Writes a JSON report and a PNG of per-class ROC curves.",
        )
        common(p, data_positional=False)
        p.add_argument("--task", default=None, help="a named task: ptbxl-superclass, cpsc")
        p.add_argument("--labels", default=None, help="comma-separated 0/1 label fields (multi-label task)")
        p.add_argument("--label-field", default=None, metavar="FIELD", help="one label field whose values are the classes")
        p.add_argument("--split-field", default="strat_fold", metavar="FIELD", help="label field that assigns the folds")
        p.add_argument("--train", default="1-6", metavar="FOLDS", help="training folds")
        p.add_argument("--val", default="7", metavar="FOLDS", help="validation folds (model selection)")
        p.add_argument("--test", default="8", metavar="FOLDS", help="test folds (reported)")
        p.add_argument("--seed", type=int, default=0, help="seed of the random-init baseline and of the head")
        p.add_argument("--out", default=f"runs/{name}/report.json", metavar="FILE.json", help="JSON report (PNG beside it)")
        if name == "probe":
            p.add_argument("--classifier", default="linear", choices=["linear", "logreg"],
                           help=f"linear: the paper's (AdamW lr {number(LINEAR_PROBE.lr)}, batch {LINEAR_PROBE.batch_size}, "
                                f"{LINEAR_PROBE.epochs} epochs); logreg: scikit-learn")
        else:
            p.add_argument("--epochs", type=_count(1), default=FINETUNE.epochs, metavar="N", help="training epochs")
            p.add_argument("--lr", type=_positive_float, default=FINETUNE.lr, help="AdamW learning rate")
            p.add_argument("--batch-size", type=_count(1), default=FINETUNE.batch_size, metavar="N",
                           help="ECGs per step")
        p.set_defaults(func=_downstream)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecg-jepa",
        description="ECG-JEPA: self-supervised representation learning for 12-lead ECGs, with fused CroPA attention.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_pretrain(sub)

    p = sub.add_parser(
        "prepare-data", formatter_class=_Help, help="prepare every ECG of a folder into float16 shards for training",
        description="Read every record under SRC (WFDB .hea/.dat/.mat, CPSC2018 and CODE-15 .mat, .npy + .json\n"
        "sidecar, a PTB-XL tree or the processed PTB-XL arrays), select the leads, keep the first SECONDS,\n"
        "resample to FS (FFT) and write memory-mappable float16 shards plus manifest.jsonl to OUT. A record\n"
        "that fails is skipped and listed with its file and reason in OUT/failures.jsonl (exit status 1);\n"
        "a re-run resumes.",
    )
    p.add_argument("src", help="a data folder or one record")
    p.add_argument("out", help="output folder for shards and manifest")
    p.add_argument("--leads", default=",".join(LEADS), help="comma-separated lead names, in order")
    p.add_argument("--fs", type=_count(1), default=FS, metavar="HZ", help="output sampling rate")
    p.add_argument("--seconds", type=_positive_float, default=N_SAMPLES / FS,
                   help="seconds kept from the start of each record")
    p.add_argument("--pad", action="store_true", help="zero-pad records shorter than SECONDS instead of failing")
    p.add_argument("--band-pass", action="store_true", help="0.67–40 Hz band-pass (off in the paper's pretraining)")
    p.add_argument("--zscore", action="store_true", help="per-lead z-score")
    p.add_argument("--workers", type=_count(1), default=2, metavar="N", help="worker processes")
    p.add_argument("--shard-size", type=_count(1), default=4096, metavar="N", help="records per shard")
    p.set_defaults(func=_prepare_data)

    _add_data_commands(sub)

    p = sub.add_parser(
        "backends", formatter_class=_Help, help="say which CroPA attention backend auto picks for a shape, and why",
        description="Which CroPA attention backend `auto` picks for inputs of this shape, dtype and device, and\n"
        "every reason each other backend was or was not taken. Nothing is allocated: --device cuda works on a\n"
        "machine without a GPU (the GPU is then described by --capability).",
    )
    vit_b = PRESETS["vit-b"].encoder
    p.add_argument("--device", type=_device, default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda (default: cuda when there is a GPU)")
    p.add_argument("--capability", type=_capability, default="9.0", help="without a GPU: the compute capability to describe (8.0: A100)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"], help="inputs' dtype")
    p.add_argument("--batch", type=_count(1), default=1, help="batch size (B)")
    p.add_argument("--heads", type=_count(1), default=vit_b.num_heads, help="attention heads (H; vit-b's)")
    p.add_argument("--leads", type=_count(1), default=len(LEADS), help="leads (L)")
    p.add_argument("--slots", type=_count(1), default=N_SLOTS, help="time slots per lead (T)")
    p.add_argument("--head-dim", type=_count(1), default=vit_b.dim // vit_b.num_heads, help="head dim (d; vit-b's)")
    p.add_argument("--grad", action="store_true", help="inputs require grad (training)")
    p.set_defaults(func=_backends)

    p = sub.add_parser(
        "bench", formatter_class=_Help, help="check parity, then time every backend; write JSON, CSV, Markdown and a PNG",
        description="Benchmark suite: every CroPA backend (and unmasked dense SDPA, the speed of light of dense\n"
        "attention), the patch embedding, one encoder block and one training step, ours vs the reference.\n"
        "Parity with a float64 oracle is checked first; a backend that fails it is never timed.\n"
        "See benchmarks/README.md.",
    )
    p.add_argument("--quick", action="store_true", help="tiny shapes and short timing: a smoke check")
    p.add_argument("--device", type=_device, default=None, help="cpu or cuda (default: cuda when there is a GPU)")
    p.add_argument("--budget", type=_positive_float, default=None, metavar="SECONDS",
                   help="timing per case (default: 1, quick 0.05)")
    p.add_argument("--threads", type=_count(0), default=0, metavar="N", help="torch CPU threads (0: torch's own choice)")
    p.add_argument("--only", default="attention,patch-embed,block,train-step,data",
                   help="comma-separated parts to run: attention, patch-embed, block, train-step, data")
    p.add_argument("--shapes", default=None, choices=["quick", "cpu", "gpu", "goal"],
                   help="attention shapes (default: gpu or cpu by device; goal: the speed goals' four shapes)")
    p.add_argument("--backends", default=None, help="only these attention backends, e.g. sdpa,flex,triton,dense (on a GPU also row-efficient, "
                   "row-flash, row-cudnn: split's row pass alone; split-library: split with the library's row "
                   "kernel); with train-step: auto and these, eager")
    p.add_argument("--out", default="runs/bench", metavar="DIR",
                   help="folder for the result files (benchmarks/results/ keeps the ones worth committing)")
    p.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as e:  # bad input: one line; anything else is a bug and keeps its traceback
        print(f"ecg-jepa {args.command}: error: {e}", file=sys.stderr)
        return 2
    except RunError as e:  # stopped from outside (a lost rank, a failed checkpoint write): one line
        print(f"ecg-jepa {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
