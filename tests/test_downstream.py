"""Downstream: tasks, folds, embed/probe/finetune end to end, on generated data and (when present) PTB-XL."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

from ecg_jepa import Encoder, EncoderConfig, load_encoder, save_encoder
from ecg_jepa.cli import main
from ecg_jepa.constants import STANDARD_12
from ecg_jepa.data import prepare_data
from ecg_jepa.data.synthetic import synthesize
from ecg_jepa.eval.downstream import Task, downstream, open_data, parse_folds, resolve_task, split_by_field
from ecg_jepa.eval.probe import random_init

PTBXL = Path(SHARED_DATA) / "ptbxl-processed"


@pytest.fixture(scope="module")
def labelled_shards(tmp_path_factory):
    """180 generated ECGs (500 Hz, 12 leads) whose heart-rate band and rhythm are the labels; fold = i % 3 + 1."""
    root = tmp_path_factory.mktemp("labelled")
    src = root / "src"
    src.mkdir()
    for i in range(180):
        signal, label = synthesize(50_000 + i, fs=500)
        np.save(src / f"s{i:03d}.npy", signal)
        labels = {"rhythm": "irregular" if label % 2 else "regular", "fold": i % 3 + 1,
                  "brady": int(label // 2 == 0), "tachy": int(label // 2 == 2)}
        (src / f"s{i:03d}.json").write_text(json.dumps({"fs": 500, "leads": list(STANDARD_12), "labels": labels}))
    prepare_data(src, root / "shards", workers=1, progress=False)
    torch.manual_seed(0)
    save_encoder(Encoder(EncoderConfig(dim=32, depth=1, num_heads=2)), root / "enc.pt")
    return root


def test_folds_and_tasks():
    assert parse_folds("1-3,5") == {1, 2, 3, 5}
    records = [{"id": str(i), "labels": {"fold": i % 3 + 1, "kind": "ab"[i % 2], "x": i % 2}} for i in range(9)]
    splits = split_by_field(records, "fold", "1", "2", "3")
    assert splits == {"train": [0, 3, 6], "val": [1, 4, 7], "test": [2, 5, 8]}
    with pytest.raises(ValueError, match="overlap"):
        split_by_field(records, "fold", "1-2", "2", "3")
    with pytest.raises(ValueError, match="no records in the test"):
        split_by_field(records, "fold", "1", "2", "4")
    task = resolve_task(None, None, "kind", records)
    assert task == Task("multiclass", ("a", "b"), "kind") and task.targets(records).tolist() == [0, 1] * 4 + [0]
    assert resolve_task(None, "x", None, records).targets(records).shape == (9, 1)
    with pytest.raises(ValueError, match="say what to predict"):
        resolve_task(None, None, None, records)
    with pytest.raises(ValueError, match="no usable label"):
        Task("multilabel", ("missing",)).targets(records)


@pytest.mark.parametrize("classifier", ["linear", "logreg"])
def test_probe_beats_chance_on_a_learnable_label(labelled_shards, classifier, capsys):
    out = labelled_shards / f"probe-{classifier}.json"
    code = main(["probe", str(labelled_shards / "enc.pt"), "--data", str(labelled_shards / "shards"),
                 "--labels", "brady,tachy", "--split-field", "fold", "--train", "1", "--val", "2", "--test", "3",
                 "--classifier", classifier, "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "pretrained" in printed and "random init" in printed
    report = json.loads(out.read_text())
    assert report["split_sizes"] == {"train": 60, "val": 60, "test": 60}
    # Heart rate is visible to any encoder of ECG patches: well above chance, for the checkpoint and the
    # random-init twin of the same architecture alike (the checkpoint here is untrained too).
    for name in ("pretrained", "random init"):
        assert report["results"][name]["macro_auroc"] > 0.7, (name, report["results"][name])
        assert report["results"][name]["validation_auroc"] is not None
    assert out.with_suffix(".png").exists()


def test_finetune_runs_and_chooses_on_validation(labelled_shards, capsys):
    out = labelled_shards / "ft.json"
    assert main(["finetune", str(labelled_shards / "enc.pt"), "--data", str(labelled_shards / "shards"),
                 "--label-field", "rhythm", "--split-field", "fold", "--train", "1", "--val", "2", "--test", "3",
                 "--epochs", "1", "--lr", "1e-3", "--batch-size", "30", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["task"]["kind"] == "multiclass" and report["results"]["pretrained"]["chosen"] == "epoch 1 of 1"


def test_the_protocol_and_its_baseline_live_in_eval(labelled_shards):
    """``downstream`` is the protocol the CLI prints; its baseline is ``random_init(encoder, seed)``, drawn
    from the seed alone, the caller's random state untouched."""
    data = open_data(labelled_shards / "shards", progress=False)
    enc = load_encoder(labelled_shards / "enc.pt")
    task = resolve_task(None, "brady,tachy", None, data.records)
    splits = split_by_field(data.records, "fold", "1", "2", "3")
    results = downstream(enc, data, task, splits, classifier="logreg", seed=3, progress=False)
    state = torch.get_rng_state()
    baseline = random_init(enc, 3)
    assert torch.equal(torch.get_rng_state(), state)
    alone = downstream(baseline, data, task, splits, classifier="logreg", seed=3, progress=False)["pretrained"]
    assert results["random init"].macro_auroc == alone.macro_auroc
    assert torch.equal(random_init(enc, 3).W_P.weight, baseline.W_P.weight)
    assert not torch.equal(random_init(enc, 4).W_P.weight, baseline.W_P.weight)


def test_embed_raw_records_with_a_lead_subset(labelled_shards):
    out = labelled_shards / "emb" / "e.npy"
    assert main(["embed", str(labelled_shards / "enc.pt"), str(labelled_shards / "src"), "--out", str(out),
                 "--leads", "V6,II"]) == 0
    feats = np.load(out)
    assert feats.shape == (180, 32) and np.isfinite(feats).all()
    assert out.with_suffix(".ids.txt").read_text().splitlines()[0] == "s000.npy"


@pytest.mark.skipif(not PTBXL.is_dir(), reason="../shared/data/ptbxl-processed is absent")
def test_ptbxl_superclass_probe_end_to_end(tmp_path, capsys):
    prepare_data(PTBXL, tmp_path / "shards", workers=2, progress=False)
    torch.manual_seed(0)
    save_encoder(Encoder(EncoderConfig(dim=32, depth=1, num_heads=2)), tmp_path / "enc.pt")
    assert main(["probe", str(tmp_path / "enc.pt"), "--data", str(tmp_path / "shards"), "--task", "ptbxl-superclass",
                 "--train", "1-6", "--val", "7", "--test", "8", "--out", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["split_sizes"] == {"train": 1097, "val": 185, "test": 160}
    assert set(report["results"]["pretrained"]["per_class_auroc"]) == {"NORM", "MI", "STTC", "CD", "HYP"}
