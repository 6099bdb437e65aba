"""The command line as a user meets it: one-line errors for bad input, help that says each default once,
inputs of any float dtype, held-out evaluation over several folders, random-init baselines."""
import argparse
import json
import re

import numpy as np
import pytest
import torch

from ecg_jepa import Encoder, EncoderConfig, load_encoder, save_encoder
from ecg_jepa.cli import build_parser, main
from ecg_jepa.constants import STANDARD_12
from ecg_jepa.data import prepare_data
from ecg_jepa.data.synthetic import synthesize
from ecg_jepa.errors import InputError
from ecg_jepa.eval.probe import logreg_probe


@pytest.mark.parametrize("argv,match", [
    (["pretrain", "--train-size", "0"], "--train-size: must be ≥ 1"),
    (["pretrain", "--threads", "-3"], "--threads: must be ≥ 0"),
    (["pretrain", "--device", "tpu"], "--device: choose cpu or cuda"),
    (["pretrain", "--lr", "-1"], "--lr: must be > 0"),
    (["backends", "--capability", "sm90"], "--capability: a compute capability is MAJOR.MINOR"),
])
def test_bad_numbers_are_one_line_usage_errors(argv, match, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_a_batch_larger_than_the_data_is_refused(tmp_path, capsys):
    assert main(["pretrain", "--train-size", "10", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "batch size 32 is larger than the 10 ECGs" in err and len(err.strip().splitlines()) == 1


def test_help_says_each_default_once(capsys):
    for command in ("pretrain", "prepare-data", "embed", "probe", "finetune", "backends", "bench"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        for block in re.split(r"\n  (?=-)", text):
            assert block.count("default") <= 1, (command, block)
    pretrain = next(a for a in build_parser()._subparsers._group_actions[0].choices["pretrain"]._actions
                    if a.dest == "checkpoint_minutes")
    assert pretrain.default == 10.0


def _subcommands() -> dict[str, "argparse.ArgumentParser"]:
    return build_parser()._subparsers._group_actions[0].choices


def test_help_shows_every_default():
    """Every option with a default (not None, not a flag's False) says it in its help."""
    for command, parser in _subcommands().items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or action.default in (None, argparse.SUPPRESS) or action.default is False:
                continue
            text = formatter._expand_help(action)
            assert "default" in text, (command, action.option_strings, text)


def test_recipe_numbers_come_from_the_table():
    """pretrain's help and PretrainConfig's defaults read the recipe table; nothing repeats its numbers."""
    from ecg_jepa.train.pretrain import PretrainConfig
    from ecg_jepa.train.recipe import DEFAULT_MASK, DEFAULT_PRESET, RECIPES, default_warmup, recipe_values

    helps = {a.dest: a.help for a in _subcommands()["pretrain"]._actions}
    assert recipe_values("batch_size") == "vit-b: 64 multiblock / 128 random; tiny: 32"
    for field in ("steps", "epochs", "batch_size", "lr", "warmup_epochs"):
        assert recipe_values(field) in helps[field]
    recipe, cfg = RECIPES[(DEFAULT_PRESET, DEFAULT_MASK)], PretrainConfig()
    assert (cfg.preset, cfg.mask, cfg.steps, cfg.batch_size, cfg.lr, cfg.warmup_steps) == \
        (DEFAULT_PRESET, DEFAULT_MASK, recipe.steps, recipe.batch_size, recipe.lr, default_warmup(recipe.steps))


@pytest.mark.parametrize("grad", [["--grad"], []])
def test_backends_describes_a_gpu_without_one(capsys, grad):
    """The choice for a described sm_90 GPU is the committed table's fastest at that shape, with its source."""
    from ecg_jepa.ops.cropa.measured import nearest, tables

    assert main(["backends", "--device", "cuda", "--dtype", "bf16", *grad]) == 0
    out = capsys.readouterr().out
    if not torch.cuda.is_available():
        assert "no GPU here" in out and "cuda sm_90" in out
    table = [t for t in tables() if t["sm"] == "9.0"][-1]
    times = nearest(table["shapes"], 8, 50)["fwd_bwd" if grad else "fwd"]
    assert f"-> '{min(times, key=times.get)}'" in out and table["source"] in out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_encoder_takes_any_float_input(dtype):
    enc = Encoder(EncoderConfig(dim=32, depth=1, num_heads=2)).eval()
    x = torch.randn(2, 8, 2500)
    expect = enc(x)
    got = enc(x.to(dtype))
    assert got.dtype == torch.float32
    assert (got - expect).abs().max() < (1e-5 if dtype == torch.float64 else 0.2)


def test_load_encoder_lead_strings_and_foreign_configs(tmp_path):
    enc = Encoder(EncoderConfig(dim=32, depth=1, num_heads=2))
    save_encoder(enc, tmp_path / "enc.pt")
    assert load_encoder(tmp_path / "enc.pt", leads="II").config.leads == (1,)
    assert load_encoder(tmp_path / "enc.pt", leads="v6, I").config.leads == (7, 0)
    with pytest.raises(InputError, match="unknown lead 'III'"):
        load_encoder(tmp_path / "enc.pt", leads="III")
    state = torch.load(tmp_path / "enc.pt", weights_only=True)
    state["config"]["rotary"] = True
    torch.save(state, tmp_path / "newer.pt")
    with pytest.raises(InputError, match="does not know \\(rotary\\).*upgrade"):
        load_encoder(tmp_path / "newer.pt")


def _folder(tmp_path, name, seeds, fold):
    src = tmp_path / f"raw-{name}"
    src.mkdir()
    for s in seeds:
        signal, label = synthesize(s, fs=500)
        np.save(src / f"r{s}.npy", signal)
        (src / f"r{s}.json").write_text(json.dumps({"fs": 500, "leads": list(STANDARD_12),
                                                    "labels": {"fold": fold(s), "fast": int(label >= 4)}}))
    return src


def test_probe_pools_several_folders_shards_and_raw(tmp_path, capsys):
    """Pretraining pool (shards) + a separately kept test fold (raw): one --data list, no trick needed."""
    pool = _folder(tmp_path, "pool", range(0, 40), lambda s: 1 + s % 2)
    held_out = _folder(tmp_path, "test", range(40, 56), lambda s: 3)
    prepare_data(pool, tmp_path / "pool-shards", workers=1, progress=False)
    save_encoder(Encoder(EncoderConfig(dim=32, depth=1, num_heads=2)), tmp_path / "enc.pt")
    code = main(["probe", str(tmp_path / "enc.pt"), "--data", str(tmp_path / "pool-shards"), str(held_out),
                 "--labels", "fast", "--split-field", "fold", "--train", "1", "--val", "2", "--test", "3",
                 "--classifier", "logreg", "--out", str(tmp_path / "report.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "train 1 (20), validation 2 (20), test 3 (16)" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["split_sizes"] == {"train": 20, "val": 20, "test": 16} and report["records_left_out"] == []


def test_embed_random_init_is_a_seeded_baseline(tmp_path):
    src = _folder(tmp_path, "e", range(3), lambda s: 1)
    save_encoder(Encoder(EncoderConfig(dim=32, depth=1, num_heads=2)), tmp_path / "enc.pt")
    outs = {}
    for name, extra in (("trained", []), ("rand-a", ["--random-init", "7"]), ("rand-b", ["--random-init", "7"])):
        assert main(["embed", str(tmp_path / "enc.pt"), str(src), "--out", str(tmp_path / f"{name}.npy"), *extra]) == 0
        outs[name] = np.load(tmp_path / f"{name}.npy")
    assert np.array_equal(outs["rand-a"], outs["rand-b"]) and not np.allclose(outs["rand-a"], outs["trained"])


def test_logreg_grid_extends_past_its_edges():
    """Where the best C lies outside 10^-3..10 the grid goes there (the old grid stopped at its edge)."""
    rng = np.random.default_rng(0)
    y = rng.integers(2, size=3000)
    weak = (rng.normal(size=(3000, 40)) + 0.02 * y[:, None] * np.linspace(0, 3, 40)).astype(np.float32)
    strong = (rng.normal(size=(3000, 5)) + 1.5 * y[:, None]).astype(np.float32)
    chosen = []
    for x in (weak, strong):
        result = logreg_probe((x[:1000], y[:1000]), (x[2000:], y[2000:]), 2, val=(x[1000:2000], y[1000:2000]))
        chosen.append(float(result.chosen.split("=")[1].split()[0]))
    assert chosen[0] < 1e-3 and chosen[1] > 10, chosen


def test_a_misspelt_backend_in_the_environment_is_refused_before_the_run_folder_is_touched(tmp_path, monkeypatch,
                                                                                          capsys):
    """$ECG_JEPA_ATTN_BACKEND is checked like --backend: with --overwrite, the old run must still be there."""
    (tmp_path / "checkpoint.pt").write_bytes(b"an old run")
    monkeypatch.setenv("ECG_JEPA_ATTN_BACKEND", "tritn")
    assert main(["pretrain", "--overwrite", "--out", str(tmp_path)]) == 2
    assert "$ECG_JEPA_ATTN_BACKEND = 'tritn' names no attention backend" in capsys.readouterr().err
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"an old run"


def test_pretrain_backend_option_does_not_outlive_the_command(tmp_path):
    """--backend holds for the run only: a later call in the same process sees the setting it had before."""
    from ecg_jepa.ops.setting import current_backend

    assert main(["pretrain", "--backend", "reference", "--steps", "1", "--batch-size", "2", "--train-size", "4",
                 "--probe-train", "0", "--workers", "0", "--device", "cpu", "--out", str(tmp_path / "run")]) == 0
    assert current_backend("attention") == "auto"
