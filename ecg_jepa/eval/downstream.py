"""Downstream use of an encoder on labelled ECGs: tasks and splits from shard manifests, probes and full
fine-tuning, and the protocol (:func:`downstream`): fit on the training folds, choose on the validation
folds, score on the test folds, beside the same procedure on a randomly initialised encoder."""
from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ..constants import FS, LEADS, find_lead
from ..data.prepare import bandpass
from ..data.shards import PrepareOptions, ShardDataset, prepare_data
from ..errors import InputError
from ..model.encoder import Encoder
from ..train.recipe import FINETUNE
from .probe import PROBES, ProbeResult, _scores, beside_random_init, embed_dataset, macro_auroc, probabilities

# Named tasks: (kind, label names as stored in the manifest).
TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ptbxl-superclass": ("multilabel", ("NORM", "MI", "STTC", "CD", "HYP")),
    "cpsc": ("multilabel", ("STD", "STE", "VEB", "AF", "IAVB", "LBBB", "NSR", "PAC", "RBBB")),
}


@dataclass
class Task:
    """What to predict: ``multilabel`` over 0/1 label fields ``names``, or ``multiclass`` over the values
    of one label field (``field``; ``names`` its classes, sorted)."""

    kind: str
    names: tuple[str, ...]
    field: str | None = None

    def targets(self, records: Sequence[dict]) -> np.ndarray:
        """(n, C) {0, 1} float32 (multi-label) or (n,) int64 class ids (multi-class)."""
        out = []
        for r in records:
            labels = r["labels"]
            try:
                out.append([float(labels[n]) for n in self.names] if self.kind == "multilabel" else
                           self.names.index(str(labels[self.field])))
            except (KeyError, ValueError) as e:
                raise InputError(f"record {r.get('id')} has no usable label {e} for this task") from None
        return np.asarray(out, dtype=np.float32 if self.kind == "multilabel" else np.int64)


def resolve_task(name: str | None, labels: str | None, field: str | None, records: Sequence[dict]) -> Task:
    """A task from a preset name, a comma-separated list of 0/1 label fields, or one multi-class field."""
    if name:
        if name not in TASKS:
            raise InputError(f"unknown task {name!r}; choose one of {', '.join(TASKS)} or pass --labels / --label-field")
        kind, names = TASKS[name]
        return Task(kind, names)
    if labels:
        return Task("multilabel", tuple(labels.split(",")))
    if field:
        values = sorted({str(r["labels"].get(field)) for r in records if field in r["labels"]})
        if len(values) < 2:
            raise InputError(f"label field {field!r} has fewer than two classes in this data")
        return Task("multiclass", tuple(values), field)
    raise InputError("say what to predict: --task NAME, --labels A,B,C (multi-label) or --label-field F (multi-class)")


def parse_folds(text: str) -> set[int]:
    """'1-6' or '1,3,5' or '8' -> set of ints."""
    folds: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        folds.update(range(int(lo), int(hi or lo) + 1))
    return folds


def split_by_field(records: Sequence[dict], field: str, train: str, val: str, test: str) -> dict[str, list[int]]:
    """Indices of the train / validation / test records by the value of ``field`` (e.g. PTB-XL strat_fold)."""
    folds = {"train": parse_folds(train), "val": parse_folds(val), "test": parse_folds(test)}
    if any(folds[a] & folds[b] for a, b in (("train", "val"), ("train", "test"), ("val", "test"))):
        raise InputError(f"train, validation and test folds overlap: {folds}")
    out: dict[str, list[int]] = {k: [] for k in folds}
    for i, r in enumerate(records):
        if field not in r["labels"]:
            raise InputError(f"record {r.get('id')} has no {field!r}; choose --split-field or split otherwise")
        for name, wanted in folds.items():
            if int(r["labels"][field]) in wanted:
                out[name].append(i)
    for name, idx in out.items():
        if not idx:
            raise InputError(f"no records in the {name} folds {sorted(folds[name])} of {field!r}")
    return out


class Collection(Dataset):
    """The ECGs of several folders as one dataset: item i is ``(x, i)``, x (len(leads), 2500) float32 in the
    requested lead order; ``records[i]`` its manifest entry (id, labels); ``failures`` the records of raw
    folders that could not be read or prepared ({"path", "reason"}), left out."""

    def __init__(self, parts: Sequence[tuple[ShardDataset, list[int]]], failures: list[dict]) -> None:
        self.parts = list(parts)
        self.index = [(p, j) for p, (shards, _) in enumerate(self.parts) for j in range(len(shards))]
        self.records = [r for shards, _ in self.parts for r in shards.records]
        self.failures = failures

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        part, j = self.index[i]
        shards, rows = self.parts[part]
        return shards[j][0][rows], i


def _rows(stored: Sequence[str], leads: Sequence[str], where) -> list[int]:
    rows = [find_lead(name, stored) for name in leads]
    missing = [name for name, row in zip(leads, rows) if row is None]
    if missing:
        raise InputError(f"{where} has no lead {', '.join(missing)} (it has {', '.join(stored)})")
    return rows


def open_data(paths: str | os.PathLike | Sequence[str | os.PathLike], leads: Sequence[str] = LEADS, *,
              pad: bool = False, scratch: str | os.PathLike | None = None, progress: bool = True) -> Collection:
    """The ECGs of one or several folders, in the given leads: shards from ``prepare-data`` are read as
    they are; raw folders (any layout :func:`~ecg_jepa.data.find_records` reads) are prepared into
    ``scratch`` first, record by record, a record that fails being listed in ``failures`` and left out."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    parts, failures = [], []
    for n, path in enumerate(paths):
        path = Path(path)
        raw = not (path / "manifest.jsonl").exists()
        if raw:
            if scratch is None:
                raise InputError(f"{path} is not a shards folder; prepare it with `ecg-jepa prepare-data {path} OUT`")
            out = Path(scratch) / f"prepared-{n}"
            prepare_data(path, out, PrepareOptions(leads=tuple(leads), pad=pad), progress=progress)
            failures += [{"path": f["path"], "reason": f["reason"]} for f in _read_failures(out)]
            path = out
        shards = ShardDataset(path)
        if raw:  # a raw record is known by its path in its folder (two folders may share file stems)
            for r in shards.records:
                r["id"] = r["key"]
        parts.append((shards, _rows(shards.config["leads"], leads, path)))
    data = Collection(parts, failures)
    if not len(data):
        raise InputError(f"no ECG could be read from {', '.join(map(str, paths))}"
                         + (f" ({len(failures)} failed: {failures[0]['reason']})" if failures else ""))
    return data


def _read_failures(folder: Path) -> list[dict]:
    path = folder / "failures.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Light augmentation: per-lead amplitude scaling in [0.9, 1.1] and Gaussian noise (1 % of the std)."""
    scale = 0.9 + 0.2 * torch.rand(x.shape[0], x.shape[1], 1, generator=gen)
    noise = torch.randn(x.shape, generator=gen) * 0.01 * x.std()
    return x * scale + noise


class Classifier(nn.Module):
    """Encoder + linear head on the mean-pooled tokens."""

    def __init__(self, encoder: Encoder, n_out: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.dim, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.embed(x))


def _filtered(x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(bandpass(x.numpy(), float(FS)))


@torch.no_grad()
def _classify(model: Classifier, data: Dataset, multilabel: bool, device: torch.device) -> np.ndarray:
    """Class probabilities (n, C) of every item of ``data`` (band-passed like the training inputs)."""
    model.eval()
    return np.concatenate([probabilities(model(_filtered(x).to(device)), multilabel)
                           for x, _ in DataLoader(data, batch_size=64)])


def finetune(
    encoder: Encoder, data: Dataset, splits: dict[str, list[int]], y: np.ndarray, *, epochs: int = FINETUNE.epochs,
    lr: float = FINETUNE.lr, batch_size: int = FINETUNE.batch_size, seed: int = 0, progress: bool = True,
) -> ProbeResult:
    """Full fine-tuning (0.67–40 Hz band-pass, light augmentation, AdamW; defaults
    :data:`~ecg_jepa.train.recipe.FINETUNE`): the epoch with the best validation macro AUROC is scored on
    the test split."""
    multilabel = y.ndim == 2
    n_out = y.shape[1] if multilabel else int(y.max()) + 1
    device = next(encoder.parameters()).device
    torch.manual_seed(seed)
    model = Classifier(copy.deepcopy(encoder), n_out).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=FINETUNE.weight_decay)
    loss_fn = nn.functional.binary_cross_entropy_with_logits if multilabel else nn.functional.cross_entropy
    targets = torch.as_tensor(y)
    gen = torch.Generator().manual_seed(seed)
    best = (-1.0, None, 0)
    for epoch in range(1, epochs + 1):
        model.train()
        loader = DataLoader(Subset(data, splits["train"]), batch_size=batch_size, shuffle=True, generator=gen)
        for x, idx in tqdm(loader, desc=f"finetune epoch {epoch}", leave=False, disable=not progress):
            logits = model(_augment(_filtered(x), gen).to(device))
            loss = loss_fn(logits.float(), targets[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        score = macro_auroc(y[splits["val"]], _classify(model, Subset(data, splits["val"]), multilabel, device))[0]
        if score > best[0]:
            best = (score, copy.deepcopy(model.state_dict()), epoch)
    model.load_state_dict(best[1])
    result = _scores(y[splits["test"]], _classify(model, Subset(data, splits["test"]), multilabel, device))
    result.val_auroc, result.chosen = best[0], f"epoch {best[2]} of {epochs}"
    return result


def downstream(
    encoder: Encoder, data: Collection, task: Task, splits: dict[str, list[int]], *, method: str = "probe",
    classifier: str = "linear", epochs: int = FINETUNE.epochs, lr: float = FINETUNE.lr,
    batch_size: int = FINETUNE.batch_size, seed: int = 0, progress: bool = True,
) -> dict[str, ProbeResult]:
    """The downstream protocol: ``encoder`` and its random-init baseline
    (:func:`~ecg_jepa.eval.probe.random_init` of ``seed``) each fit on ``splits["train"]``, chosen on
    ``splits["val"]`` (the epoch, or logistic regression's C) and scored on ``splits["test"]``.
    ``method`` "probe": ``classifier`` (see :data:`~ecg_jepa.eval.probe.PROBES`) on frozen features;
    "finetune": :func:`finetune` with ``epochs``, ``lr`` and ``batch_size``. Returns
    {"pretrained": ..., "random init": ...}."""
    if method not in ("probe", "finetune"):
        raise InputError(f"method must be 'probe' or 'finetune', got {method!r}")
    if classifier not in PROBES:
        raise InputError(f"unknown classifier {classifier!r}; choose one of {', '.join(PROBES)}")
    y = task.targets(data.records)

    def run(name: str, enc: Encoder) -> ProbeResult:
        if method == "finetune":
            return finetune(enc, data, splits, y, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                            progress=progress)
        feats, _ = embed_dataset(enc, data, desc=f"{name}: features", progress=progress)
        split = {k: (feats[v], y[v]) for k, v in splits.items()}
        return PROBES[classifier](split["train"], split["test"], len(task.names), val=split["val"], seed=seed)

    return beside_random_init(encoder, seed, run)


def write_report(out: str | os.PathLike, task: Task, sizes: dict, results: dict[str, ProbeResult], how: str,
                 failures: Sequence[dict] = ()) -> Path:
    """The JSON report of a probe or fine-tune run (with the records left out, if any); returns its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "task": {"kind": task.kind, "names": list(task.names), "field": task.field},
        "method": how,
        "split_sizes": sizes,
        "results": {
            name: {"macro_auroc": r.macro_auroc, "macro_f1": r.macro_f1, "accuracy": r.accuracy,
                   "per_class_auroc": dict(zip(task.names, r.per_class_auroc)), "validation_auroc": r.val_auroc,
                   "chosen": r.chosen}
            for name, r in results.items()
        },
        "records_left_out": list(failures),
    }
    out.write_text(json.dumps(report, indent=1))
    return out


def plot_roc(png: str | os.PathLike, task: Task, y_test: np.ndarray, results: dict[str, ProbeResult]) -> None:
    """Per-class ROC curves on the test split, one panel per encoder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    onehot = y_test if y_test.ndim == 2 else np.eye(len(task.names))[y_test]
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.5), squeeze=False)
    for ax, (name, r) in zip(axes[0], results.items()):
        for c, label in enumerate(task.names):
            if r.per_class_auroc[c] is None:
                continue
            fpr, tpr, _ = roc_curve(onehot[:, c], r.prob[:, c])
            ax.plot(fpr, tpr, lw=1, label=f"{label} ({r.per_class_auroc[c]:.2f})")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_title(f"{name}: macro AUROC {r.macro_auroc:.3f}")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
