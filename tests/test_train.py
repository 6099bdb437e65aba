"""Pretraining loop, schedules, checkpoints, probe and the CLI."""
import json

import numpy as np
import pytest
import torch

from ecg_jepa import JEPA, load_encoder, use_backend
from ecg_jepa.cli import main
from ecg_jepa.data.synthetic import SyntheticECG
from ecg_jepa.eval.probe import linear_probe
from ecg_jepa.train.pretrain import PretrainConfig, pretrain, step_mask
from ecg_jepa.train.recipe import cosine_lr, ema_momentum


def test_schedules():
    assert cosine_lr(0, 100, 10, 1e-3) == pytest.approx(1e-6)
    assert cosine_lr(10, 100, 10, 1e-3) == pytest.approx(1e-3)
    assert cosine_lr(100, 100, 10, 1e-3) == pytest.approx(1e-6)
    assert cosine_lr(55, 100, 10, 1e-3) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5)
    assert ema_momentum(0, 10) == pytest.approx(0.996) and ema_momentum(10, 10) == pytest.approx(1.0)


def test_step_masks_are_reproducible():
    cfg = PretrainConfig(seed=3)
    assert torch.equal(step_mask(cfg, 5), step_mask(cfg, 5))
    assert not all(torch.equal(step_mask(cfg, 5), step_mask(cfg, s)) for s in range(6, 10))


class CrashingECG(SyntheticECG):
    """Fails like a killed run once ``crash_at`` items have been read."""

    def __init__(self, n, crash_at):
        super().__init__(n)
        self.reads, self.crash_at = 0, crash_at

    def __getitem__(self, i):
        self.reads += 1
        if self.reads > self.crash_at:
            raise KeyboardInterrupt("simulated interruption")
        return super().__getitem__(i)


def test_interrupted_run_resumes_bit_identical(tmp_path):
    cfg = PretrainConfig(steps=6, batch_size=4, checkpoint_every=2, workers=0, lr=1e-3)
    full = pretrain(cfg, SyntheticECG(16), tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, CrashingECG(16, crash_at=4 * 4 + 2), tmp_path / "cut", progress=False)  # dies in step 5
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["step"] == 4
    resumed = pretrain(cfg, SyntheticECG(16), tmp_path / "cut", resume=True, progress=False)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    steps = [json.loads(line)["step"] for line in open(tmp_path / "cut" / "log.jsonl")]
    assert steps == [0, 1, 2, 3, 4, 5]  # step 4 of the dead run never finished, so it was never logged


def test_resume_refuses_another_configuration(tmp_path):
    cfg = PretrainConfig(steps=1, batch_size=2, workers=0)
    pretrain(cfg, SyntheticECG(4), tmp_path, progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        pretrain(PretrainConfig(steps=2, batch_size=2, workers=0), SyntheticECG(4), tmp_path, resume=True, progress=False)


def test_pretrain_checkpoint_loads_as_encoder(tmp_path):
    model = pretrain(PretrainConfig(steps=1, batch_size=2, workers=0), SyntheticECG(4), tmp_path, progress=False)
    enc = load_encoder(tmp_path / "checkpoint.pt")
    x = torch.randn(1, 8, 2500)
    assert torch.equal(enc(x), model.encoder.eval()(x))


def test_linear_probe_learns_a_separable_task(seed):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, size=(4, 16))
    y = rng.integers(4, size=800)
    x = (centers[y] + rng.normal(size=(800, 16))).astype(np.float32)
    result = linear_probe((x[:400], y[:400]), (x[400:], y[400:]), n_classes=4)
    assert result.accuracy > 0.9 and result.macro_auroc > 0.95
    noise = rng.normal(size=x.shape).astype(np.float32)
    chance = linear_probe((noise[:400], y[:400]), (noise[400:], y[400:]), n_classes=4)
    assert chance.macro_auroc < 0.62  # features unrelated to the labels: near 0.5


def test_cli_pretrain_end_to_end(tmp_path, capsys):
    code = main(["pretrain", "--steps", "3", "--batch-size", "4", "--train-size", "16", "--probe-train", "24",
                 "--probe-test", "24", "--workers", "0", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "pretrained" in out and "random init" in out and "macro AUROC" in out
    assert (tmp_path / "encoder.pt").exists() and (tmp_path / "checkpoint.pt").exists()


def test_cli_help_and_errors(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    assert "--resume" in capsys.readouterr().out
    assert main(["pretrain", "--steps", "0", "--out", "/tmp/never"]) == 2
    assert "steps and batch_size must be positive" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["pretrain", "--device", "cuda", "--out", "/tmp/never"]) == 2
        assert "no CUDA device" in capsys.readouterr().err


def _run(cmd, cwd):
    import subprocess
    import sys

    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", *cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(cwd / "run" / "checkpoint.pt", weights_only=True)


def test_ddp_on_gloo_equals_one_process_with_the_same_global_batch(tmp_path):
    args = ["pretrain", "--steps", "3", "--batch-size", "4", "--train-size", "16", "--probe-train", "0",
            "--workers", "0", "--device", "cpu", "--threads", "1", "--out", "run"]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    single = _run(["ecg_jepa", *args], tmp_path / "one")
    ddp = _run(["torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ecg_jepa", *args], tmp_path / "two")
    assert single["step"] == ddp["step"] == 3
    for part in ("encoder", "target_encoder", "predictor"):
        for key, value in single[part].items():
            assert torch.allclose(value, ddp[part][key], atol=2e-6, rtol=1e-5), f"{part}.{key}"
    torch.manual_seed(0)
    assert not torch.equal(single["encoder"]["W_P.weight"], JEPA("tiny").encoder.W_P.weight)  # it did train


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_run_and_log(tmp_path, precision):
    cfg = PretrainConfig(steps=2, batch_size=4, workers=0, precision=precision, checkpoint_every=1)
    pretrain(cfg, SyntheticECG(8), tmp_path, progress=False)
    rows = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert len(rows) == 2 and all(np.isfinite(r["loss"]) and r["rep_std"] > 0 and r["peak_mem_mb"] > 0 for r in rows)
    assert (tmp_path / "curves.png").exists()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["scaler"] is not None and state["step"] == 2


def test_per_sample_masks_hide_equal_counts():
    cfg = PretrainConfig(mask="random", per_sample_masks=True, batch_size=6)
    m = step_mask(cfg, 4)
    assert m.shape == (6, 50) and len(set(m.sum(1).tolist())) == 1 and not all(torch.equal(m[0], r) for r in m)
    with pytest.raises(ValueError, match="random"):
        PretrainConfig(mask="multiblock", per_sample_masks=True)


def _losses(out):
    return [json.loads(line)["loss"] for line in open(out / "log.jsonl")]


@pytest.mark.slow
def test_compile_matches_eager_over_changing_masks(tmp_path, kernel_device):
    """--compile: 20 steps with a new multi-block mask each (16 to 35 visible slots) give the eager losses,
    with one dynamic-shape graph per block stack (no failure, no recompilation storm); on the GPU when
    there is one (inductor's GPU kernels, the fused attention inside)."""
    from ecg_jepa.train.distributed import World

    runs = {}
    for compiled in (False, True):
        cfg = PretrainConfig(steps=20, batch_size=2, workers=0, compile=compiled, log_every=5)
        pretrain(cfg, SyntheticECG(16), tmp_path / str(compiled), progress=False, say=lambda *a: None,
                 world=World(device=torch.device(kernel_device)))
        runs[compiled] = _losses(tmp_path / str(compiled))
    visible = [json.loads(line)["visible_slots"] for line in open(tmp_path / "True" / "log.jsonl")]
    assert len(set(visible)) > 5
    assert runs[True] == pytest.approx(runs[False], rel=1e-5, abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["triton", "split"])
def test_compiled_blocks_run_the_fused_custom_ops(seed, kernel_device, backend):
    """The compiled block stacks (fullgraph) trace the fused ops (Triton; split: PyTorch's row kernel and
    the Triton column kernels, or the torch column pass on the CPU) and give the eager losses over masks of
    different sizes (two leads keep the CPU interpreter fast; on a GPU, inductor's own kernels)."""
    from ecg_jepa.model.masks import multiblock_mask
    from ecg_jepa.ops.layout import SlotMask

    def run(compiled):
        torch._dynamo.reset()  # graphs other tests compiled in this process do not count towards dynamo's limit
        torch.manual_seed(0)
        model = JEPA("tiny", leads=(0, 1)).to(kernel_device)
        if compiled:
            model.compile_blocks()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        x = torch.randn(1, 2, 2500, generator=torch.Generator().manual_seed(seed)).to(kernel_device)
        losses = []
        for step in range(3):
            mask = SlotMask.of(multiblock_mask(generator=torch.Generator().manual_seed(seed + step)), 1, kernel_device)
            loss, _ = model(x, mask, trusted=True)
            opt.zero_grad()
            loss.backward()
            opt.step()
            model.update_teacher(0.99)
            losses.append(loss.item())
        return losses

    with use_backend(attention=backend, embed="triton"):  # the setting, read when the blocks are traced
        assert run(True) == pytest.approx(run(False), rel=1e-5, abs=1e-6)


SYNCING_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "unique_dim", "equal",
               "is_nonzero", "bincount", "lift_fresh", "item"}


class SyncCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the ops that, on a GPU, make the host wait for it: reading a value back (item, bool, int),
    data-dependent output sizes (nonzero, masked_select, unique), tensors made from Python data."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        if name in SYNCING_OPS:
            self.calls.append(name)
        if name == "index" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]):
            self.calls.append("index with a bool mask")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("mask_kind", ["multiblock", "random"])
def test_training_step_reads_nothing_back(mask_kind):
    """A step (teacher, student, predictor, loss, backward, EMA update) on a batch the loader prepared
    issues no op that would stall the host on a GPU (CPU stand-in for torch.cuda.set_sync_debug_mode)."""
    from ecg_jepa.train.loader import StepBatches, to_device
    from ecg_jepa.train.pretrain import step_indices

    cfg = PretrainConfig(batch_size=4, mask=mask_kind, per_sample_masks=mask_kind == "random")
    data = SyntheticECG(8)
    batch = StepBatches(data, lambda s: step_indices(cfg, s, len(data)), lambda s: step_mask(cfg, s), slice(0, 4))[3]
    x, mask = to_device(batch, torch.device("cpu"))
    model = JEPA("tiny")
    with SyncCounter() as counter:
        loss, rep_std = model(x, mask, trusted=True)
        loss.backward()
        model.update_teacher(0.996)
    assert counter.calls == [], counter.calls
    with SyncCounter() as untrusted:  # the public call without `trusted` checks the samples: it reads back
        model(x, mask)
    assert untrusted.calls


@pytest.mark.gpu
def test_gpu_training_steps_do_not_synchronize():
    """On a GPU, steps of the training loop (pinned batches moved without blocking, bf16 autocast, fused
    AdamW, EMA) under torch.cuda.set_sync_debug_mode('error'): any synchronizing call raises."""
    from ecg_jepa.train.loader import StepBatches, to_device
    from ecg_jepa.train.pretrain import param_groups, step_indices

    cfg = PretrainConfig(batch_size=4)
    data = SyntheticECG(8)
    batches = StepBatches(data, lambda s: step_indices(cfg, s, len(data)), lambda s: step_mask(cfg, s), slice(0, 4))
    pinned = [{k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batches[s].items()} for s in range(3)]
    model = JEPA("tiny").cuda()
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-4, fused=True)
    for guarded in (False, True):  # a first pass outside the guard: kernels compile, memory is allocated
        torch.cuda.set_sync_debug_mode("error" if guarded else 0)
        try:
            for batch in pinned:
                x, mask = to_device(batch, torch.device("cuda"))
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss, _ = model(x, mask, trusted=True)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                model.update_teacher(0.996)
        finally:
            torch.cuda.set_sync_debug_mode(0)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["auto", "triton", "split", "sdpa"])
def test_pretrain_warms_the_variants_it_will_meet(backend):
    """The Triton kernels of the backends the run will use (the teacher's forward without gradients, the
    student's with) are compiled before the first step; sdpa needs none."""
    from ecg_jepa.ops.cropa import DISPATCH
    from ecg_jepa.ops.registry import InputSpec
    from ecg_jepa.train.pretrain import warm_up_kernels

    model = JEPA("tiny").cuda()
    with use_backend(attention=backend):
        said = warm_up_kernels(model, torch.device("cuda"), "bf16")
    cfg = model.encoder.config
    cap = tuple(torch.cuda.get_device_capability())
    chosen = {grad: DISPATCH.select(InputSpec("cuda", torch.bfloat16, (1, cfg.num_heads, 400, cfg.dim // cfg.num_heads),
                                              grad, cap, 8), backend) for grad in (False, True)}
    fused = [name for name in ("triton", "split") if name in chosen.values()]
    assert (said is None) == (not fused), said
    for name in fused:
        assert f"{name} at " in said and f"slot counts ({'forward and backward' if chosen[True] == name else 'forward'})" in said


def test_logs_throughput_utilisation_and_memory(tmp_path):
    cfg = PretrainConfig(steps=4, batch_size=2, workers=0, log_every=2)
    lines = []
    pretrain(cfg, SyntheticECG(8), tmp_path, progress=False, say=lines.append)
    rows = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert all(r["ecg_per_s"] > 0 and r["step_ms"] > 0 and r["peak_mem_mb"] > 0 for r in rows)
    assert all(r["mfu"] is None for r in rows)  # no bf16 peak for a CPU
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["ecg_per_s"] > 0
    assert any("ECG/s" in line for line in lines)


def test_step_flops_match_the_paper_scale():
    """vit-b, 64 ECGs, ~23 visible slots: about 12 TFLOP per step (teacher + 3x student + 3x predictor)."""
    from ecg_jepa.train.metrics import step_flops

    flops = step_flops(JEPA("vit-b"), 64, 23)
    assert 11e12 < flops < 13e12
