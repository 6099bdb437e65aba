"""Where a training step's GPU time goes: ``python -m ecg_jepa.benchmarks.profile_step [--compiled] --out FILE.md``
profiles a few steps of the benchmark's training step (``bench_train_step.make_step``: vit-b, B=64,
multi-block masks, bf16, fused AdamW, EMA) with ``torch.profiler`` and writes the GPU kernels by total time
(top 30), their time grouped by what they do (attention forward / backward, GEMMs, norms, elementwise,
optimizer, EMA, copies and layout changes, the rest), and the time the GPU sat idle between kernels (a
launch-bound step shows itself there), with the machine and commit."""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import torch

from .bench_train_step import build, make_step
from .timing import machine

GROUPS = (  # first match wins; matched against the lower-cased kernel name
    ("attention backward", r"cutlassb|attention_backward|flash_bwd|bprop|bwd_kernel|cropa_col_bwd|cropa_bwd"),
    ("attention forward", r"cutlassf|fmha|attention|flash|fprop|cropa|efficient"),
    ("GEMM", r"gemm|nvjet|xmma|cutlass|cublas|sm90_|sm80_|matmul|wgmma"),
    ("EMA", r"lerp"),
    ("optimizer", r"adam|multi_tensor_apply"),
    ("norm", r"layer_norm|layernorm|norm|gammabeta"),  # GammaBetaBackward: LayerNorm's weight gradients
    ("copies and layout", r"copy|cat|index|gather|scatter|transpose|permute|contiguous|memcpy|memset|fill"),
    ("elementwise and reductions", r"elementwise|vectorized|unrolled|reduce|softmax|gelu|triton_"),
)


def group_of(name: str) -> str:
    low = name.lower()
    return next((label for label, pattern in GROUPS if re.search(pattern, low)), "other")


def kernel_times(prof) -> dict[str, list[float]]:
    """Milliseconds of every GPU kernel launch a ``torch.profiler`` run recorded, by kernel name."""
    out: dict[str, list[float]] = {}
    for evt in prof.events():
        if evt.device_type == torch.autograd.DeviceType.CUDA:
            out.setdefault(evt.name, []).append(evt.time_range.elapsed_us() / 1e3)
    return out


def summary(kernels: dict[str, list[float]], steps: int, wall_ms: float, title: str, provenance: str) -> str:
    """The Markdown report: step time, busy and idle GPU time, time per group, the top 30 kernels."""
    per_kernel = {name: sum(ts) / steps for name, ts in kernels.items()}
    busy = sum(per_kernel.values())
    groups: dict[str, float] = {}
    for name, ms in per_kernel.items():
        groups[group_of(name)] = groups.get(group_of(name), 0.0) + ms
    idle = max(0.0, wall_ms - busy)
    lines = [f"# {title}", "", provenance, "",
             f"Step (CUDA events, without the profiler): **{wall_ms:.2f} ms**; kernels busy {busy:.2f} ms per step "
             f"(under the profiler); GPU idle between kernels ≈ {idle:.2f} ms ({idle / wall_ms:.0%} of the step).", "",
             "| group | ms per step | share of kernel time |", "|---|---|---|"]
    for label, ms in sorted(groups.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {label} | {ms:.3f} | {ms / busy:.1%} |")
    lines += ["", "| kernel (top 30 by time) | group | launches per step | ms per step |", "|---|---|---|---|"]
    for name, ms in sorted(per_kernel.items(), key=lambda kv: -kv[1])[:30]:
        short = name if len(name) <= 110 else name[:107] + "..."
        lines.append(f"| `{short.replace('|', '/')}` | {group_of(name)} | {len(kernels[name]) / steps:g} | {ms:.3f} |")
    return "\n".join(lines) + "\n"


def profile(preset: str, batch: int, compiled: bool, steps: int = 5, attn: str = "auto") -> str:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    device = torch.device("cuda")
    model = build(preset, device, attn)
    if compiled:
        model.compile_blocks()
    step = make_step(model, batch, device, torch.bfloat16)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(steps):
        step()
    end.record()
    torch.cuda.synchronize()
    wall_ms = start.elapsed_time(end) / steps
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    info = machine(device)
    title = (f"Training step profile: {preset}, B={batch}, multi-block masks, bf16, attention {attn}, "
             f"{'block stacks compiled' if compiled else 'eager'}")
    provenance = (f"{info['device']}, torch {info['torch']}, triton {info['triton']}, commit {info['commit']}, "
                  f"{time.strftime('%Y-%m-%d')}; {steps} steps timed, then {steps} profiled.")
    return summary(kernel_times(prof), steps, wall_ms, title, provenance)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ecg_jepa.benchmarks.profile_step", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="vit-b")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--compiled", action="store_true", help="compile the block stacks first")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--attn", default="auto", help="the attention backend of every block (default: auto)")
    parser.add_argument("--out", type=Path, required=True, help="the Markdown file to write")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("profile_step needs a CUDA GPU")
    text = profile(args.preset, args.batch, args.compiled, args.steps, args.attn)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
