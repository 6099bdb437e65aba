"""The ``ecg-jepa`` command: thin wrappers that parse, call and print."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def _pretrain(args: argparse.Namespace) -> int:
    from .data.synthetic import CLASS_NAMES, N_CLASSES, SyntheticECG
    from .eval.probe import embed_dataset, linear_probe
    from .model.checkpoint import save_encoder
    from .model.encoder import Encoder
    from .train.pretrain import PretrainConfig, pretrain

    torch.set_num_threads(args.threads or torch.get_num_threads())
    cfg = PretrainConfig(
        preset=args.preset, mask=args.mask, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, attn_backend=args.backend, workers=args.workers,
    )
    out = Path(args.out)
    if args.data:
        from .data.shards import ShardDataset

        data, what = ShardDataset(args.data), f"ECGs from the shards in {args.data}"
    else:
        data, what = SyntheticECG(args.train_size, seed=cfg.seed), "synthetic ECGs"
    print(f"pretraining ECG-JEPA '{cfg.preset}' on {len(data)} {what}: {cfg.steps} steps of "
          f"{cfg.batch_size}, {cfg.mask} masks -> {out}/")
    model = pretrain(cfg, data, out, resume=args.resume)
    enc_path = save_encoder(model.encoder, out / "encoder.pt")
    print(f"encoder checkpoint: {enc_path} (load with ecg_jepa.load_encoder)")
    if args.probe_train == 0 or args.data:
        return 0

    print(f"linear probe on {len(CLASS_NAMES)} classes ({', '.join(CLASS_NAMES)}): "
          f"{args.probe_train} train / {args.probe_test} test ECGs")
    train_set = SyntheticECG(args.probe_train, seed=10_000 + cfg.seed)
    test_set = SyntheticECG(args.probe_test, seed=20_000 + cfg.seed)
    torch.manual_seed(cfg.seed + 1)
    random_encoder = Encoder(model.encoder.config)
    rows = []
    for name, encoder in (("pretrained", model.encoder), ("random init", random_encoder)):
        feats = embed_dataset(encoder, train_set, desc=f"{name}: train"), embed_dataset(encoder, test_set, desc=f"{name}: test")
        rows.append((name, linear_probe(*feats, n_classes=N_CLASSES, seed=cfg.seed)))
    for name, result in rows:
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


def _backends(args: argparse.Namespace) -> int:
    from .ops.cropa import explain_backend

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    q = torch.zeros(args.batch, args.heads, args.leads * args.slots, args.head_dim, dtype=dtype, device=args.device)
    q.requires_grad_(args.grad)
    print(explain_backend(q, n_leads=args.leads))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import run

    if args.threads:
        torch.set_num_threads(args.threads)
    md, stem = run(quick=args.quick, device=args.device, out=args.out, budget=args.budget)
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
        description="Pretrain ECG-JEPA on synthetic 12-lead ECGs (the built-in default data source), save a "
        "checkpoint, then compare a linear probe on the pretrained encoder with the same probe on a randomly "
        "initialised one. With no options: the tiny preset, a few minutes on 2 CPU cores.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--preset", default="tiny", choices=["tiny", "vit-b"], help="model size (vit-b: the paper's)")
    p.add_argument("--mask", default="multiblock", choices=["multiblock", "random"], help="masking strategy")
    p.add_argument("--steps", type=int, default=800, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=32, help="ECGs per step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine schedule, 10%% warm-up)")
    p.add_argument("--data", default=None, help="shards from `ecg-jepa prepare-data` (default: synthetic ECGs)")
    p.add_argument("--train-size", type=int, default=4096, help="synthetic ECGs to pretrain on")
    p.add_argument("--probe-train", type=int, default=1024,
                   help="synthetic ECGs to fit the probe on (0: no probe; no synthetic probe after --data)")
    p.add_argument("--probe-test", type=int, default=1024, help="ECGs to score the probe on")
    p.add_argument("--backend", default="auto", help="CroPA attention backend (see `ecg-jepa backends`)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, data order and masks")
    p.add_argument("--workers", type=int, default=1, help="data-loading worker processes")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default="runs/pretrain", help="folder for checkpoints and the step log")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if present")
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
    p.add_argument("--out", default="benchmarks/results", help="folder for the result files")
    p.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"ecg-jepa {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
