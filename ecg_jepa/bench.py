"""``ecg-jepa bench``: parity first, then speed, of every backend; one table; JSON, CSV and a PNG.

Each case is checked against a float64 reference before it is timed; a backend that fails parity is
reported as failed and never timed. Ratios are measured side by side in one run: ``vs ref`` is the
reference's time over this row's, ``vs alt`` the best non-ours alternative's (sdpa / flex / dense) over
this row's, so > 1 means faster. On a GPU the achieved TFLOP/s and GB/s are shown as % of ceilings
measured in the same run (a large device copy; a large bf16 matmul).
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .benchtools import Timing, machine, time_call
from .ops.cropa import BACKENDS, cropa_attention

ALTERNATIVES = ("sdpa", "flex", "dense")  # the best non-ours ways to run this attention


@dataclass
class Row:
    """One timed (or refused) configuration."""

    case: str
    shape: str
    dtype: str
    impl: str
    parity: str
    fwd: Timing | None = None
    fwd_bwd: Timing | None = None
    flops: float = 0.0  # forward FLOPs (backward counted as 2.5x)
    bytes: float = 0.0  # minimum forward bytes moved
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AttnShape:
    b: int
    h: int
    leads: int
    slots: int
    d: int

    @property
    def n(self) -> int:
        return self.leads * self.slots

    def __str__(self) -> str:
        return f"B{self.b} H{self.h} L{self.leads}xT{self.slots}=N{self.n} d{self.d}"


SHAPES = {
    "quick": [AttnShape(2, 2, 8, 50, 16)],
    "cpu": [AttnShape(16, 8, 8, 50, 64), AttnShape(16, 8, 8, 23, 64), AttnShape(16, 8, 12, 50, 64),
            AttnShape(16, 8, 8, 10, 64), AttnShape(4, 8, 8, 50, 64)],
    "gpu": [AttnShape(64, 16, 8, 50, 48), AttnShape(64, 16, 8, 23, 48), AttnShape(128, 16, 8, 17, 48),
            AttnShape(64, 16, 12, 50, 48), AttnShape(64, 16, 8, 100, 48), AttnShape(64, 16, 8, 10, 48),
            AttnShape(256, 16, 8, 50, 48), AttnShape(16, 16, 8, 50, 48)],
}


def _dense(q, k, v, n_leads, scale):
    """Unmasked dense SDPA: the speed of light of dense attention, not CroPA (never parity-checked)."""
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def _attention_fn(impl: str) -> Callable:
    if impl == "dense":
        return lambda q, k, v, n_leads: _dense(q, k, v, n_leads, q.shape[-1] ** -0.5)
    return lambda q, k, v, n_leads: cropa_attention(q, k, v, n_leads, backend=impl)


def _parity(impl: str, q, k, v, g, n_leads, with_grad: bool) -> str:
    """'ok', or why the backend's first-sample output/gradients miss the float64 reference."""
    q1, k1, v1, g1 = (x[:1] for x in (q, k, v, g))
    ref = [x.detach().double().requires_grad_(with_grad) for x in (q1, k1, v1)]
    ref_out = cropa_attention(*ref, n_leads, backend="reference")
    mine = [x.detach().clone().requires_grad_(with_grad) for x in (q1, k1, v1)]
    out = cropa_attention(*mine, n_leads, backend=impl)
    pairs = [(out, ref_out)]
    if with_grad:
        ref_out.backward(g1.double())
        out.backward(g1)
        pairs += [(a.grad, r.grad) for a, r in zip(mine, ref)]
    # Bound: fp32 1e-4; 16-bit: 2x the same-precision reference's own error + 1e-2 (FlashAttention convention).
    base = [x.detach().clone().requires_grad_(with_grad) for x in (q1, k1, v1)]
    base_out = cropa_attention(*base, n_leads, backend="reference")
    base_pairs = [(base_out, ref_out)]
    if with_grad:
        base_out.backward(g1)
        base_pairs += [(a.grad, r.grad) for a, r in zip(base, ref)]
    for name, (a, r), (b_, _) in zip(("out", "dq", "dk", "dv"), pairs, base_pairs):
        err = (a.double() - r).abs().max().item()
        bound = 1e-4 if q.dtype == torch.float32 else 2 * (b_.double() - r).abs().max().item() + 1e-2
        if not err <= bound:
            return f"FAIL {name} err {err:.2e} > {bound:.2e}"
    return "ok"


def attention_rows(shape: AttnShape, dtype: torch.dtype, device: torch.device, budget: float) -> list[Row]:
    """CroPA attention, every backend (and unmasked dense SDPA), forward and forward+backward."""
    rotate = 3 if device.type == "cuda" else 1
    make = lambda: torch.randn(shape.b, shape.h, shape.n, shape.d, device=device, dtype=dtype)  # noqa: E731
    sets = [[make() for _ in range(4)] for _ in range(rotate)]
    keys = shape.slots + shape.leads - 1
    flops = 4.0 * shape.b * shape.h * shape.n * shape.d * keys
    nbytes = 4.0 * shape.b * shape.h * shape.n * shape.d * sets[0][0].element_size()
    rows = []
    for impl in (*BACKENDS, "dense"):
        row = Row("attention", str(shape), str(dtype).removeprefix("torch."), impl, "ok", flops=flops, bytes=nbytes)
        rows.append(row)
        if impl != "dense":
            reason = BACKENDS[impl].why_not(sets[0][0], False)
            if reason is None and impl == "triton" and device.type == "cpu":
                reason = "CPU interpreter: correct but not a speed to report"
            if reason is not None:
                row.parity = f"skipped: {reason}"
                continue
        train_reason = None if impl == "dense" else BACKENDS[impl].why_not(sets[0][0].requires_grad_(), True)
        sets[0][0].requires_grad_(False)
        with_grad = train_reason is None
        if impl != "dense":
            q, k, v, g = sets[0]
            try:
                row.parity = _parity(impl, q, k, v, g, shape.leads, with_grad)
            except Exception as e:  # a backend that crashes (or cannot build) is reported, not fatal
                row.parity = f"FAIL {type(e).__name__}: {str(e).splitlines()[0][:120]}"
            if row.parity != "ok":
                continue
        fn = _attention_fn(impl)
        with torch.no_grad():
            row.fwd = time_call(lambda i: fn(*sets[i % rotate][:3], shape.leads), device, budget)
        if with_grad:
            grads = [[x.detach().requires_grad_() for x in s[:3]] + [s[3]] for s in sets]

            def step(i):
                q, k, v, g = grads[i % rotate]
                fn(q, k, v, shape.leads).backward(g)
                q.grad = k.grad = v.grad = None

            row.fwd_bwd = time_call(step, device, budget)
        else:
            row.extra["fwd_bwd"] = f"n/a: {train_reason}"
    return rows


def patch_embed_rows(b: int, dim: int, dtype: torch.dtype, device: torch.device, budget: float) -> list[Row]:
    """The fused patch embedding (multi-block-sized mask: 27 of 50 slots visible) vs the unfused torch path."""
    from .ops.patch_embed import BACKENDS as EMBED_BACKENDS
    from .ops.patch_embed import patch_embed

    rotate = 3 if device.type == "cuda" else 1
    gen = torch.Generator().manual_seed(0)
    mask = torch.randperm(50, generator=gen) < 23
    xs = [torch.randn(b, 8, 2500, device=device, dtype=dtype) for _ in range(rotate)]
    w = torch.randn(dim, 50, device=device, dtype=dtype) * 0.1
    bias = torch.randn(dim, device=device, dtype=dtype)
    pos = torch.randn(400, dim, device=device)
    n_tok = 8 * 27
    elt = xs[0].element_size()
    nbytes = b * n_tok * (50 + dim) * elt  # read each visible patch once, write each token once
    rows = []
    for impl in EMBED_BACKENDS:
        row = Row("patch embed", f"B{b} 8x2500 -> {n_tok} tok x D{dim}", str(dtype).removeprefix("torch."), impl, "ok",
                  flops=2.0 * b * n_tok * 50 * dim, bytes=nbytes)
        rows.append(row)
        reason = EMBED_BACKENDS[impl].why_not(xs[0], True)
        if reason is None and impl == "triton" and device.type == "cpu":
            reason = "CPU interpreter: correct but not a speed to report"
        if reason is not None:
            row.parity = f"skipped: {reason}"
            continue
        ref = patch_embed(xs[0][:1].double(), w.double(), bias.double(), pos.double(), mask=mask, backend="reference")
        try:
            got = patch_embed(xs[0][:1], w, bias, pos, mask=mask, backend=impl)
        except Exception as e:  # reported, not fatal
            row.parity = f"FAIL {type(e).__name__}: {str(e).splitlines()[0][:120]}"
            continue
        base = patch_embed(xs[0][:1], w, bias, pos, mask=mask, backend="reference")
        bound = 2 * (base.double() - ref).abs().max().item() + 1e-5
        if not (got.double() - ref).abs().max().item() <= bound:
            row.parity = "FAIL forward"
            continue
        with torch.no_grad():
            row.fwd = time_call(lambda i: patch_embed(xs[i % rotate], w, bias, pos, mask=mask, backend=impl), device, budget)
        leaves = [(x.clone().requires_grad_(), w.clone().requires_grad_(), bias.clone().requires_grad_()) for x in xs]
        grad = torch.randn(b, n_tok, dim, device=device, dtype=dtype)
        row.fwd_bwd = time_call(
            lambda i: patch_embed(*leaves[i % rotate], pos, mask=mask, backend=impl).backward(grad), device, budget
        )
    return rows


def data_rows(n_records: int, n_loader: int, workers: int = 2) -> list[Row]:
    """``prepare-data`` records/s on generated .npy records (500 Hz, 12 leads, 10 s: read, select, FFT
    resample), and ShardDataset + DataLoader ECG/s over a shard of ``n_loader`` records."""
    import json
    import tempfile

    import numpy as np
    from torch.utils.data import DataLoader

    from .data.records import STANDARD_12
    from .data.shards import ShardDataset, prepare_data

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        src.mkdir()
        rng = np.random.default_rng(0)
        for i in range(n_records):
            np.save(src / f"r{i}.npy", rng.normal(0, 0.3, size=(12, 5000)).astype(np.float32))
            (src / f"r{i}.json").write_text(json.dumps({"fs": 500, "leads": list(STANDARD_12)}))
        tic = time.perf_counter()
        prepare_data(src, out, workers=workers, progress=False)
        secs = time.perf_counter() - tic
        row = Row("prepare-data", f"{n_records} records, {workers} workers", "float16", "ours", "ok")
        row.extra["records_per_s"] = n_records / secs
        rows.append(row)
        # Loader: one big shard of n_loader records (copies of the prepared ones), shuffled batches of 256.
        shard = np.load(out / "shard-00000.npy")
        big = np.resize(shard, (n_loader, *shard.shape[1:]))
        np.save(out / "shard-00000.npy", big)
        manifest = [{"key": f"k{i}", "id": f"k{i}", "shard": 0, "offset": i, "labels": {}} for i in range(n_loader)]
        (out / "manifest.jsonl").write_text("".join(json.dumps(m) + "\n" for m in manifest))
        loader = DataLoader(ShardDataset(out), batch_size=256, shuffle=True, num_workers=workers,
                            persistent_workers=workers > 0)
        for _ in loader:  # warm-up epoch: workers start, pages come into the cache
            pass
        tic = time.perf_counter()
        seen = sum(len(x) for x, _ in loader)
        row = Row("shard loader", f"{n_loader} records, batch 256, {workers} workers", "float16->float32", "ours", "ok")
        row.extra["ecg_per_s"] = seen / (time.perf_counter() - tic)
        rows.append(row)
    return rows


def model_rows(preset: str, batch: int, device: torch.device, dtype: torch.dtype, budget: float) -> list[Row]:
    """One encoder block (fwd, fwd+bwd) and one full training step, ours (auto) vs reference attention."""
    from .model.jepa import JEPA, PRESETS
    from .model.masks import multiblock_mask
    from .model.vit import Block

    cfg = PRESETS[preset].encoder
    rows = []
    x_tok = torch.randn(batch, 400, cfg.dim, device=device, dtype=dtype)
    for impl in ("auto", "reference"):
        torch.manual_seed(0)
        block = Block(cfg.dim, cfg.num_heads, attn_backend=impl).to(device, dtype)
        row = Row("encoder block", f"B{batch} N400 D{cfg.dim} H{cfg.num_heads}", str(dtype).removeprefix("torch."),
                  impl, "ok")
        with torch.no_grad():
            row.fwd = time_call(lambda i: block(x_tok, 8), device, budget)
        row.fwd_bwd = time_call(lambda i: block(x_tok, 8).sum().backward(), device, budget)
        rows.append(row)
    ecgs = torch.randn(batch, 8, 2500, device=device)
    mask = multiblock_mask(generator=torch.Generator().manual_seed(0))
    for impl in ("auto", "reference"):
        torch.manual_seed(0)
        model = JEPA(preset, attn_backend=impl).to(device)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

        def train_step(i):
            with autocast:
                loss = model.loss(ecgs, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            model.update_teacher(0.996)

        row = Row("train step", f"{preset} B{batch} multiblock", str(dtype).removeprefix("torch."), impl, "ok")
        row.fwd_bwd = time_call(train_step, device, budget)
        row.extra["ecg_per_s"] = batch / (row.fwd_bwd.median / 1e3)
        rows.append(row)
    return rows


def ceilings(device: torch.device) -> dict:
    """Measured device ceilings: copy bandwidth (GB/s) and bf16 matmul throughput (TFLOP/s)."""
    if device.type != "cuda":
        return {}
    x = torch.empty(256 * 2**20, dtype=torch.float32, device=device).normal_()  # 1 GiB
    y = torch.empty_like(x)
    copy = time_call(lambda i: y.copy_(x), device, 1.0)
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    mm = time_call(lambda i: a @ a, device, 1.0)
    return {"copy_GBps": 2 * x.numel() * 4 / copy.median / 1e6, "bf16_TFLOPs": 2 * 8192**3 / mm.median / 1e9}


def _ratios(rows: list[Row]) -> None:
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault((r.case, r.shape, r.dtype), []).append(r)
    for group in groups.values():
        for attr in ("fwd", "fwd_bwd"):
            ref = next((getattr(r, attr) for r in group if r.impl == "reference" and getattr(r, attr)), None)
            alts = [getattr(r, attr).median for r in group if r.impl in ALTERNATIVES and getattr(r, attr)]
            for r in group:
                t = getattr(r, attr)
                if t is None:
                    continue
                if ref:
                    r.extra[f"{attr}_vs_ref"] = ref.median / t.median
                if alts:
                    r.extra[f"{attr}_vs_alt"] = min(alts) / t.median


def _fmt_t(t: Timing | None) -> str:
    return "—" if t is None else f"{t.median:.3f} ({t.p20:.3f}–{t.p80:.3f})"


def _fmt_x(v) -> str:
    return "—" if v is None else f"{v:.2f}x"


def _fmt_rate(extra: dict) -> str:
    for key, unit in (("ecg_per_s", "ECG/s"), ("records_per_s", "records/s")):
        if key in extra:
            return f"{extra[key]:,.0f} {unit}"
    return "—"


def table(rows: list[Row], ceil: dict) -> str:
    """A Markdown table of the run."""
    head = ["case", "shape", "dtype", "impl", "parity", "fwd ms (p20–p80)", "fwd+bwd ms (p20–p80)",
            "fwd vs ref", "fwd vs alt", "f+b vs ref", "f+b vs alt", "rate"]
    if ceil:
        head += ["fwd TFLOP/s (% peak)", "fwd GB/s (% copy)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.case, r.shape, r.dtype, r.impl, r.parity, _fmt_t(r.fwd),
                 _fmt_t(r.fwd_bwd) if r.fwd_bwd or "fwd_bwd" not in r.extra else r.extra["fwd_bwd"],
                 _fmt_x(r.extra.get("fwd_vs_ref")), _fmt_x(r.extra.get("fwd_vs_alt")),
                 _fmt_x(r.extra.get("fwd_bwd_vs_ref")), _fmt_x(r.extra.get("fwd_bwd_vs_alt")), _fmt_rate(r.extra)]
        if ceil:
            if r.fwd and r.flops:
                tf = r.flops / r.fwd.median / 1e9
                gb = r.bytes / r.fwd.median / 1e6
                cells += [f"{tf:.1f} ({100 * tf / ceil['bf16_TFLOPs']:.0f}%)", f"{gb:.0f} ({100 * gb / ceil['copy_GBps']:.0f}%)"]
            else:
                cells += ["—", "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _chart(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [(f"{r.case}\n{r.shape}\n{r.impl}", r.extra["fwd_bwd_vs_ref"]) for r in rows if "fwd_bwd_vs_ref" in r.extra]
    if not bars:
        return
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(bars)), 4.5))
    ax.bar(range(len(bars)), [v for _, v in bars], color="tab:blue")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(bars)), [n for n, _ in bars], rotation=90, fontsize=6)
    ax.set_ylabel("forward+backward speed-up over reference")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(quick: bool = False, device: str | None = None, out: str | Path = "benchmarks/results",
        budget: float | None = None) -> tuple[str, Path]:
    """Run the suite; write ``bench-<device>-<time>.{json,csv,png}`` under ``out``; return the table."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    kind = "quick" if quick else ("gpu" if dev.type == "cuda" else "cpu")
    budget = budget if budget is not None else (0.05 if quick else 1.0)
    dtypes = [torch.bfloat16, torch.float16] if dev.type == "cuda" else [torch.float32]
    rows: list[Row] = []
    for shape in SHAPES[kind]:
        for dtype in dtypes[:1] if shape != SHAPES[kind][0] else dtypes:
            rows += attention_rows(shape, dtype, dev, budget)
    if dev.type == "cuda":
        rows += patch_embed_rows(64, 768, torch.bfloat16, dev, budget)
        rows += model_rows("vit-b", 64, dev, torch.bfloat16, budget)
    else:
        rows += patch_embed_rows(4 if quick else 64, 64 if quick else 768, torch.float32, dev, budget)
        rows += model_rows("tiny", 4 if quick else 32, dev, torch.float32, budget)
        rows += data_rows(16 if quick else 512, 512 if quick else 8192, workers=2)
    _ratios(rows)
    ceil = ceilings(dev)
    info = {**machine(dev), "ceilings": ceil, "kind": kind, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    text = table(rows, ceil)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"bench-{dev.type}{'-quick' if quick else ''}-{time.strftime('%Y%m%d-%H%M%S')}"
    records = [{**asdict(r), "fwd": r.fwd and asdict(r.fwd), "fwd_bwd": r.fwd_bwd and asdict(r.fwd_bwd)} for r in rows]
    stem.with_suffix(".json").write_text(json.dumps({"machine": info, "rows": records}, indent=1))
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case", "shape", "dtype", "impl", "parity", "fwd_ms", "fwd_p20", "fwd_p80",
                         "fwd_bwd_ms", "fwd_bwd_p20", "fwd_bwd_p80", "fwd_bwd_vs_ref", "fwd_bwd_vs_alt"])
        for r in rows:
            writer.writerow([r.case, r.shape, r.dtype, r.impl, r.parity,
                             *(["", "", ""] if r.fwd is None else [r.fwd.median, r.fwd.p20, r.fwd.p80]),
                             *(["", "", ""] if r.fwd_bwd is None else [r.fwd_bwd.median, r.fwd_bwd.p20, r.fwd_bwd.p80]),
                             r.extra.get("fwd_bwd_vs_ref", ""), r.extra.get("fwd_bwd_vs_alt", "")])
    _chart(rows, stem.with_suffix(".png"))
    header = (f"{info['device']} ({info.get('cpu_threads')} threads), torch {info['torch']}, triton {info['triton']}, "
              f"commit {info['commit']}" + (f", ceilings {ceil}" if ceil else ""))
    md = f"{header}\n\n{text}\n"
    stem.with_suffix(".md").write_text(md)
    return md, stem
