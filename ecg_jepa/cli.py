"""The ``ecg-jepa`` command: thin wrappers that parse, call and print."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .constants import LEADS
from .errors import InputError


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
    from .data.synthetic import CLASS_NAMES, N_CLASSES, SyntheticECG
    from .eval.probe import probe_against_random_init
    from .model.checkpoint import save_encoder
    from .model.jepa import resolve_recipe
    from .train.distributed import close_world, init_world
    from .train.pretrain import PretrainConfig, Preempted, pretrain

    if args.threads:
        torch.set_num_threads(args.threads)
    world = init_world(args.device)
    say = print if world.main else (lambda *a, **k: None)
    data, what = _pretrain_data(args)
    plan = resolve_recipe(args.preset, args.mask, len(data), batch_size=args.batch_size, lr=args.lr, epochs=args.epochs,
                          steps=args.steps, warmup_epochs=args.warmup_epochs)
    cfg = PretrainConfig(
        preset=args.preset, mask=args.mask, per_sample_masks=args.per_sample_masks, steps=plan.steps,
        batch_size=plan.batch_size, lr=plan.lr, warmup_steps=plan.warmup_steps,
        precision=args.precision or ("bf16" if world.device.type == "cuda" else "fp32"), compile=args.compile,
        seed=args.seed, attn_backend=args.backend, workers=args.workers, checkpoint_every=args.checkpoint_every,
        checkpoint_minutes=args.checkpoint_minutes, log_every=args.log_every,
    )
    out = Path(args.out)
    say(f"pretraining ECG-JEPA '{cfg.preset}' on {len(data)} {what}: {cfg.steps} steps of {cfg.batch_size} "
        f"({cfg.steps / plan.per_epoch:.1f} epochs), {cfg.mask} masks, lr {cfg.lr:g}, {cfg.precision}, "
        f"{world.size} process(es) on {world.device} -> {out}/")
    try:
        model = pretrain(cfg, data, out, resume=args.resume, overwrite=args.overwrite, world=world, say=say)
    except Preempted as e:
        say(f"ecg-jepa pretrain: {e}")
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
    print(f"{args.out}: {counts['prepared']} records prepared, {counts['failed']} failed "
          f"(reasons in {args.out}/failures.jsonl), {counts['skipped']} already done")
    return 0


def _load_for_data(args: argparse.Namespace):
    """(encoder, random-init twin, dataset) for embed/probe/finetune, with the requested leads."""
    from .eval.downstream import open_data
    from .model.checkpoint import load_encoder
    from .model.encoder import Encoder

    leads = tuple(args.leads.split(",")) if args.leads else None
    encoder = load_encoder(args.checkpoint, leads=leads)
    names = tuple(LEADS[i] for i in encoder.config.leads)
    data = open_data(args.data, names, pad=args.pad)
    torch.manual_seed(args.seed)
    random_encoder = Encoder(encoder.config).eval()
    return encoder, random_encoder, data


def _embed(args: argparse.Namespace) -> int:
    import numpy as np

    from .eval.probe import embed_dataset

    encoder, _, data = _load_for_data(args)
    feats, idx = embed_dataset(encoder, data, batch_size=args.batch_size, desc="embed")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, feats)
    ids = out.with_suffix(".ids.txt")
    ids.write_text("".join(f"{data.records[i]['id']}\n" for i in idx))
    print(f"{out}: {feats.shape[0]} embeddings of width {feats.shape[1]}; record ids in {ids}")
    return 0


def _downstream(args: argparse.Namespace) -> int:
    """probe and finetune: task, splits, the run on the checkpoint and on a random-init twin, report."""
    from .eval.downstream import finetune, plot_roc, resolve_task, split_by_field, write_report
    from .eval.probe import embed_dataset, linear_probe, logreg_probe

    encoder, random_encoder, data = _load_for_data(args)
    task = resolve_task(args.task, args.labels, args.label_field, data.records)
    y = task.targets(data.records)
    splits = split_by_field(data.records, args.split_field, args.train, args.val, args.test)
    sizes = {k: len(v) for k, v in splits.items()}
    n_classes = len(task.names)
    print(f"{args.command}: {task.kind} task over {', '.join(task.names)}; {args.split_field} train {args.train} "
          f"({sizes['train']}), validation {args.val} ({sizes['val']}), test {args.test} ({sizes['test']})")
    results = {}
    for name, enc in (("pretrained", encoder), ("random init", random_encoder)):
        if args.command == "finetune":
            results[name] = finetune(enc, data, splits, y, epochs=args.epochs, lr=args.lr,
                                     batch_size=args.batch_size, seed=args.seed)
            continue
        feats, idx = embed_dataset(enc, data, desc=f"{name}: features")
        split = {k: (feats[v], y[v]) for k, v in splits.items()}
        probe = logreg_probe if args.classifier == "logreg" else linear_probe
        results[name] = probe(split["train"], split["test"], n_classes, val=split["val"], seed=args.seed)
    print(f"  {'encoder':<12} test scores (chosen on validation)")
    for name, result in results.items():
        print(f"  {name:<12} {result}")
    how = f"{args.command}" + (f" ({args.classifier})" if args.command == "probe" else f" (lr {args.lr:g}, {args.epochs} epochs)")
    report = write_report(args.out, task, sizes, results, how)
    plot_roc(Path(args.out).with_suffix(".png"), task, y[splits["test"]], results)
    print(f"report: {report}; ROC curves: {Path(args.out).with_suffix('.png')}")
    return 0


def _backends(args: argparse.Namespace) -> int:
    from .ops.cropa import explain_backend

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    q = torch.zeros(args.batch, args.heads, args.leads * args.slots, args.head_dim, dtype=dtype, device=args.device)
    q.requires_grad_(args.grad)
    print(explain_backend(q, n_leads=args.leads))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .benchmarks.suite import PARTS, run
    from .ops.cropa import BACKENDS

    parts = tuple(args.only.split(","))
    impls = tuple(args.backends.split(",")) if args.backends else None
    for name, given, known in (("part", parts, PARTS), ("backend", impls or (), (*BACKENDS, "dense"))):
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecg-jepa",
        description="ECG-JEPA: self-supervised representation learning for 12-lead ECGs, with fused CroPA attention.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "pretrain",
        help="pretrain ECG-JEPA, then linear-probe it against a random-init encoder",
        description="Pretrain ECG-JEPA on shards from `ecg-jepa prepare-data` or on synthetic 12-lead ECGs (the "
        "built-in default), save checkpoints (atomically; --resume continues), log every step to log.jsonl, "
        "and, on synthetic data, compare a linear probe of the pretrained encoder with the same probe on a "
        "randomly initialised one. With no options: the tiny preset, a few minutes on 2 CPU cores. Multi-GPU: "
        "torchrun --nproc_per_node=N -m ecg_jepa pretrain ...",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--preset", default="tiny", choices=["tiny", "vit-b"], help="model size (vit-b: the paper's)")
    p.add_argument("--data", default=None, help="shards from `ecg-jepa prepare-data` (default: synthetic ECGs)")
    p.add_argument("--folds", default=None, help="with --data: pretrain only on these folds, e.g. 1-7")
    p.add_argument("--split-field", default="strat_fold", help="with --folds: the label field holding the fold")
    p.add_argument("--mask", default="multiblock", choices=["multiblock", "random"], help="masking strategy")
    p.add_argument("--per-sample-masks", action="store_true",
                   help="a mask per ECG (random masks only) instead of one per batch as the original")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (tiny default: 800)")
    p.add_argument("--epochs", type=int, default=None, help="epochs instead of steps (vit-b default: 100)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="global ECGs per step, split over processes (vit-b: 64 multiblock / 128 random; tiny: 32)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate, cosine schedule (vit-b: 5e-5 multiblock / 2.5e-5 random; tiny: 1e-3)")
    p.add_argument("--warmup-epochs", type=float, default=None,
                   help="linear warm-up from 1e-6 (default: 5 epochs with --epochs, else 10%% of the steps)")
    p.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16"],
                   help="autocast precision (default: bf16 on a GPU, fp32 on the CPU; fp16 uses a grad scaler)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--train-size", type=int, default=4096, help="synthetic ECGs to pretrain on")
    p.add_argument("--probe-train", type=int, default=1024,
                   help="synthetic ECGs to fit the probe on (0: no probe; no synthetic probe after --data)")
    p.add_argument("--probe-test", type=int, default=1024, help="synthetic ECGs to score the probe on")
    p.add_argument("--backend", default="auto", help="CroPA attention backend (see `ecg-jepa backends`)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, data order and masks")
    p.add_argument("--workers", type=int, default=1, help="data-loading worker processes (per rank)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default="runs/pretrain", help="folder for checkpoints, log.jsonl and curves.png")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUT from its newest readable checkpoint (fresh if it has none)")
    p.add_argument("--overwrite", action="store_true", help="start afresh in an OUT that holds a run, deleting it")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0,
                   help="minutes between checkpoints (also written after the first step and on SIGTERM/SIGINT)")
    p.add_argument("--log-every", type=int, default=10,
                   help="steps between log lines written (the only time the host waits for the GPU)")
    p.set_defaults(func=_pretrain)

    p = sub.add_parser(
        "prepare-data",
        help="prepare every ECG of a folder into float16 shards for training",
        description="Read every record under SRC (WFDB .hea/.dat/.mat, CPSC2018 and CODE-15 .mat, .npy + .json "
        "sidecar, a PTB-XL tree or the processed PTB-XL arrays), select the leads, keep the first SECONDS, "
        "resample to FS (FFT) and write memory-mappable float16 shards plus manifest.jsonl to OUT. Records that "
        "fail are skipped and listed with the reason in OUT/failures.jsonl; a re-run resumes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("src", help="a data folder or one record")
    p.add_argument("out", help="output folder for shards and manifest")
    p.add_argument("--leads", default="I,II,V1,V2,V3,V4,V5,V6", help="comma-separated lead names, in order")
    p.add_argument("--fs", type=int, default=250, help="output sampling rate in Hz")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds kept from the start of each record")
    p.add_argument("--pad", action="store_true", help="zero-pad records shorter than SECONDS instead of failing")
    p.add_argument("--band-pass", action="store_true", help="0.67–40 Hz band-pass (off in the paper's pretraining)")
    p.add_argument("--zscore", action="store_true", help="per-lead z-score")
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument("--shard-size", type=int, default=4096, help="records per shard")
    p.set_defaults(func=_prepare_data)

    def data_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("checkpoint", help="an encoder checkpoint (ours or the original release's)")
        p.add_argument("--leads", default=None, help="reduced-lead model, e.g. II,V1 (none: the checkpoint's leads)")
        p.add_argument("--pad", action="store_true", help="zero-pad raw records shorter than 10 s")
        p.add_argument("--seed", type=int, default=0, help="seed of the random-init baseline and the head")

    p = sub.add_parser(
        "embed", help="mean-pooled encoder representations of ECGs, to a .npy file",
        description="Embed every ECG of DATA (shards from prepare-data, or any folder/record read_record "
        "reads, prepared on the fly) with the encoder: one (D,) row per ECG, record ids beside it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data_args(p)
    p.add_argument("data", help="shards folder or raw data")
    p.add_argument("--out", required=True, help="output .npy (ids go to the same name with .ids.txt)")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=_embed)

    for name, helptext in (("probe", "linear probe of a frozen encoder on labelled ECGs"),
                           ("finetune", "full fine-tuning of an encoder on labelled ECGs")):
        p = sub.add_parser(
            name, help=helptext + " (beside the same on a random-init encoder)",
            description=helptext[0].upper() + helptext[1:] + ". Splits come from a label field (PTB-XL's "
            "strat_fold by default); the model is chosen on the validation split and only then scored on the "
            "test split. The same procedure on a randomly initialised encoder of the same architecture is "
            "always printed beside it. Writes a JSON report and a PNG of per-class ROC curves.",
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        data_args(p)
        p.add_argument("--data", required=True, help="shards folder (from prepare-data) or raw labelled data")
        p.add_argument("--task", default=None, help="a named task: ptbxl-superclass, cpsc")
        p.add_argument("--labels", default=None, help="comma-separated 0/1 label fields (multi-label task)")
        p.add_argument("--label-field", default=None, help="one label field whose values are the classes")
        p.add_argument("--split-field", default="strat_fold", help="label field that assigns the folds")
        p.add_argument("--train", default="1-6", help="training folds")
        p.add_argument("--val", default="7", help="validation folds (model selection)")
        p.add_argument("--test", default="8", help="test folds (reported)")
        p.add_argument("--out", default=f"runs/{name}/report.json", help="JSON report (PNG beside it)")
        if name == "probe":
            p.add_argument("--classifier", default="linear", choices=["linear", "logreg"],
                           help="linear: the paper's (AdamW lr 0.01, batch 16, 10 epochs); logreg: scikit-learn")
        else:
            p.add_argument("--epochs", type=int, default=10)
            p.add_argument("--lr", type=float, default=6.25e-6)
            p.add_argument("--batch-size", type=int, default=16)
        p.set_defaults(func=_downstream)

    p = sub.add_parser(
        "backends",
        help="say which CroPA attention backend auto picks for a shape, and why",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--leads", type=int, default=8)
    p.add_argument("--slots", type=int, default=50, help="time slots per lead (T)")
    p.add_argument("--head-dim", type=int, default=48)
    p.add_argument("--grad", action="store_true", help="inputs require grad (training)")
    p.set_defaults(func=_backends)

    p = sub.add_parser(
        "bench",
        help="check parity, then time every backend; write JSON, CSV, Markdown and a PNG",
        description="Benchmark suite: every CroPA backend (and unmasked dense SDPA, the speed of light of dense "
        "attention), one encoder block and one training step, ours vs the reference. Parity with a float64 "
        "reference is checked first; a backend that fails it is never timed. See benchmarks/README.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="tiny shapes and short timing: a smoke check")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--budget", type=float, default=None, help="seconds of timing per case (default 1, quick 0.05)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--only", default="attention,patch-embed,block,train-step,data",
                   help="comma-separated parts to run: attention, patch-embed, block, train-step, data")
    p.add_argument("--shapes", default=None, choices=["quick", "cpu", "gpu", "goal"],
                   help="attention shapes (default: gpu or cpu by device; goal: the speed goals' four shapes)")
    p.add_argument("--backends", default=None, help="only these attention backends, e.g. sdpa,flex,triton,dense")
    p.add_argument("--out", default="runs/bench", help="folder for the result files (benchmarks/results/ keeps "
                   "the ones worth committing)")
    p.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as e:  # bad input: one line; anything else is a bug and keeps its traceback
        print(f"ecg-jepa {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
