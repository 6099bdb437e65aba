"""The pretraining step's work part by part, against the card's ceilings:
``python -m ecg_jepa.benchmarks.step_budget [--result DIR] [--profile FILE.md]``.

For a preset (vit-b) at a batch (64) with the mean multi-block mask, each part of the step (teacher forward,
student forward and backward, predictor forward and backward, optimizer and EMA) is counted from the model's
own layers: its matrix-product FLOPs (every ``nn.Linear``, the patch embedding), its attention FLOPs (QKᵀ
and PV over the keys CroPA lets each token see) and the fewest HBM bytes it must move with every
elementwise operation fused into its neighbours (bf16 activations, fp32 optimizer state). At the ceilings
measured in the same GPU run as the kernel benchmark of DIR, each part gets a floor in ms (compute or
bytes, whichever binds). Beside them, the groups of a measured ``profile_step`` table: the gap per kind of
work is what the step can still win (issue 24). Counts only: nothing runs on a GPU here.
"""
from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..constants import N_SLOTS, PATCH
from ..model.jepa import JEPA
from ..model.masks import multiblock_mask

RESULTS = Path(__file__).parent / "results"
DEFAULT_RESULT = RESULTS / "h200-20261130"
BF16, FP32 = 2, 4
# Bytes of activation traffic per token and block, in units of the width D, with every elementwise step fused
# into a neighbour: forward LayerNorm x2 (read, write), two residual adds (read 2, write 1), GELU on 4D (read,
# write); the backward moves about twice that.
ELEMENTWISE_FWD = 2 + 2 + 3 + 3 + 8
ATTN_FWD, ATTN_BWD = 4, 8  # q, k, v, o read/written once; backward: q, k, v, o, dO read, dq, dk, dv written


@dataclass
class Part:
    """One part of the step: its FLOPs and minimal bytes by kind."""

    name: str
    gemm_flops: float = 0.0
    attn_flops: float = 0.0
    gemm_bytes: float = 0.0
    attn_bytes: float = 0.0
    other_bytes: float = 0.0

    def floors_ms(self, tflops: float, gbps: float) -> dict[str, float]:
        """ms per kind at the ceilings: max(compute, bytes) for GEMMs and attention, bytes for the rest."""
        at = lambda flops, nbytes: max(flops / (tflops * 1e12), nbytes / (gbps * 1e9)) * 1e3  # noqa: E731
        return {"GEMM": at(self.gemm_flops, self.gemm_bytes), "attention": at(self.attn_flops, self.attn_bytes),
                "elementwise, norms, copies": at(0.0, self.other_bytes)}


def _stack(blocks: torch.nn.Module, tokens: int, keys: int, passes: float) -> Part:
    """A block stack over ``tokens`` tokens each seeing ``keys`` keys, ``passes`` times its forward (3:
    forward and backward), counted from its Linear layers."""
    part = Part("")
    for block in blocks:
        linears = [m for m in block.modules() if isinstance(m, torch.nn.Linear)]
        width = linears[0].in_features
        part.gemm_flops += passes * sum(2.0 * m.in_features * m.out_features for m in linears) * tokens
        part.gemm_bytes += passes * sum(m.in_features * m.out_features for m in linears) * BF16  # weights
        part.attn_flops += passes * 4.0 * width * keys * tokens
        part.attn_bytes += (ATTN_FWD + (ATTN_BWD if passes > 1 else 0)) * width * tokens * BF16
        part.other_bytes += ELEMENTWISE_FWD * (1 + 2 * (passes > 1)) * width * tokens * BF16
    return part


def mean_visible(samples: int = 512, seed: int = 0) -> float:
    """Mean visible slots per lead of the multi-block masks pretraining draws."""
    gen = torch.Generator().manual_seed(seed)
    return sum(int((~multiblock_mask(generator=gen)).sum()) for _ in range(samples)) / samples


def budget(preset: str = "vit-b", batch: int = 64, n_visible: float | None = None) -> list[Part]:
    """The step's parts (per step, all ECGs of the batch)."""
    model = JEPA(preset)  # on the CPU: a second or two for vit-b
    n_vis = mean_visible() if n_visible is None else n_visible
    enc = model.encoder
    n_leads = len(enc.config.leads)
    dim = enc.config.dim
    embed = 2.0 * PATCH * dim
    teacher = _stack(model.target_encoder.encoder_blocks.blocks, n_leads * N_SLOTS, N_SLOTS + n_leads - 1, 1)
    teacher.gemm_flops += embed * n_leads * N_SLOTS
    student = _stack(enc.encoder_blocks.blocks, round(n_leads * n_vis), n_vis + n_leads - 1, 3)
    student.gemm_flops += 3 * embed * n_leads * n_vis
    pred = model.predictor
    predictor = _stack(pred.predictor_blocks.blocks, n_leads * N_SLOTS, N_SLOTS, 3)
    for linear, tokens in ((pred.predictor_embed, n_leads * n_vis), (pred.predictor_proj, n_leads * (N_SLOTS - n_vis))):
        predictor.gemm_flops += 3 * 2.0 * linear.in_features * linear.out_features * tokens
    parts = []
    for name, part in (("teacher forward", teacher), ("student forward+backward", student),
                       ("predictor forward+backward", predictor)):
        part.name = name
        for field in ("gemm_flops", "attn_flops", "gemm_bytes", "attn_bytes", "other_bytes"):
            setattr(part, field, getattr(part, field) * (batch if field != "gemm_bytes" else 1))
        parts.append(part)
    trained = sum(p.numel() for p in (*enc.parameters(), *pred.parameters()) if p.requires_grad)
    ema = sum(p.numel() for p in model.target_encoder.parameters())
    # AdamW: read param, grad, m, v, write param, m, v (fp32); EMA: read teacher and student, write teacher.
    parts.append(Part("optimizer and EMA", other_bytes=7 * FP32 * trained + 3 * FP32 * ema))
    return parts


def ceilings(result: Path) -> dict[str, float]:
    """The copy bandwidth (GB/s) and bf16 matmul rate (TFLOP/s) measured beside the kernel benchmark."""
    path = result / "bench-kernels.json"
    if not path.exists():
        raise SystemExit(f"{path} not found: pass --result, a folder with a GPU run's bench-kernels.json")
    machine = json.loads(path.read_text())["machine"]
    return {"device": machine["device"], **machine["ceilings"]}


def measured_groups(profile: Path) -> dict[str, float]:
    """ms per step by group from a ``profile_step`` Markdown table."""
    rows = re.findall(r"^\| ([a-zA-Z ,]+) \| ([0-9.]+) \| [0-9.]+% \|$", profile.read_text(), re.M)
    return {name: float(ms) for name, ms in rows}


# How the profile's groups map onto the kinds of work above.
KINDS = {"GEMM": ("GEMM",), "attention": ("attention forward", "attention backward"),
         "elementwise, norms, copies": ("elementwise and reductions", "copies and layout", "norm", "other"),
         "optimizer and EMA": ("optimizer", "EMA")}


def report(parts: list[Part], ceil: dict, batch: int, measured: dict[str, float] | None = None,
           source: str = "") -> str:
    """Markdown: per part FLOPs, bytes and floors; per kind floor beside the measured time."""
    tflops, gbps = ceil["bf16_TFLOPs"], ceil["copy_GBps"]
    lines = [f"Ceilings measured on the {ceil['device']}: {tflops:.0f} TFLOP/s bf16 matmul, {gbps:.0f} GB/s copy.", "",
             "| part | GEMM TFLOP | attention TFLOP | min. GB moved | floor ms (GEMM / attention / rest) |",
             "|---|---|---|---|---|"]
    kinds = {kind: 0.0 for kind in KINDS}
    for part in parts:
        floors = part.floors_ms(tflops, gbps)
        if part.name == "optimizer and EMA":
            kinds["optimizer and EMA"] += floors["elementwise, norms, copies"]
        else:
            for kind, ms in floors.items():
                kinds[kind] += ms
        nbytes = part.gemm_bytes + part.attn_bytes + part.other_bytes
        lines.append(f"| {part.name} | {part.gemm_flops / 1e12:.2f} | {part.attn_flops / 1e12:.3f} | {nbytes / 1e9:.2f} | "
                     f"{floors['GEMM']:.2f} / {floors['attention']:.2f} / {floors['elementwise, norms, copies']:.2f} |")
    total = sum(kinds.values())
    lines += ["", f"Floor of the step: **{total:.1f} ms** ({batch / total * 1e3:,.0f} ECG/s).", ""]
    header = "| kind of work | floor ms |" + (" measured ms | measured / floor |" if measured else "")
    lines += [header, "|---|---|" + ("---|---|" if measured else "")]
    for kind, floor in kinds.items():
        row = f"| {kind} | {floor:.2f} |"
        if measured:
            got = sum(measured.get(group, 0.0) for group in KINDS[kind])
            row += f" {got:.2f} | {got / floor:.1f}x |"
        lines.append(row)
    if measured:
        lines.append(f"\nMeasured: {source}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ecg_jepa.benchmarks.step_budget",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="vit-b", help="model preset (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=64, help="ECGs per step (default: %(default)s)")
    parser.add_argument("--result", type=Path, default=DEFAULT_RESULT,
                        help="a GPU run's results folder, for its ceilings (default: %(default)s)")
    parser.add_argument("--profile", type=Path, default=DEFAULT_RESULT / "profile-train-step-eager.md",
                        help="a profile_step table to set beside the floors (default: %(default)s)")
    args = parser.parse_args(argv)
    measured = measured_groups(args.profile) if args.profile.exists() else None
    print(report(budget(args.preset, args.batch), ceilings(args.result), args.batch, measured, str(args.profile)))


if __name__ == "__main__":
    main()
