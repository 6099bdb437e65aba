"""Linear probes on frozen features: the paper's linear layer (AdamW, lr 0.01, batch 16, 10 epochs) or
scikit-learn's logistic regression; multi-class or multi-label; chosen on a validation split when one is
given, scored on the test split."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..model.encoder import Encoder
from ..train.recipe import LINEAR_PROBE

Split = tuple[np.ndarray, np.ndarray]  # features (n, D) float32, targets (n,) int or (n, C) {0, 1}


@torch.no_grad()
def embed_dataset(
    encoder: Encoder, data: Dataset, batch_size: int = 64, desc: str = "embedding", progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Features (n, D) float32 from ``encoder.embed`` in eval mode, and the second element (label or
    index) of each of ``data``'s ``(x, y)`` items."""
    was_training = encoder.training
    encoder.eval()
    feats, labels = [], []
    device = next(encoder.parameters()).device
    for x, y in tqdm(DataLoader(data, batch_size=batch_size), desc=desc, leave=False, disable=not progress):
        feats.append(encoder.embed(x.to(device)).float().cpu())
        labels.append(torch.as_tensor(y))
    encoder.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


@dataclass
class ProbeResult:
    """Test-set scores (``macro_auroc`` over the classes present in the test set, one-vs-rest), the
    validation AUROC the choice was made on, and the test probabilities for ROC curves."""

    macro_auroc: float
    macro_f1: float
    accuracy: float | None
    per_class_auroc: list[float | None]
    val_auroc: float | None = None
    chosen: str = ""
    prob: np.ndarray = field(default=None, repr=False)

    def __str__(self) -> str:
        acc = "" if self.accuracy is None else f"accuracy {self.accuracy:.3f}  "
        val = "" if self.val_auroc is None else f"  (validation AUROC {self.val_auroc:.3f}, {self.chosen})"
        return f"{acc}macro AUROC {self.macro_auroc:.3f}  macro F1 {self.macro_f1:.3f}{val}"


def _multilabel(y: np.ndarray) -> bool:
    return y.ndim == 2


def macro_auroc(y: np.ndarray, prob: np.ndarray) -> tuple[float, list[float | None]]:
    """Mean one-vs-rest AUROC over the classes with both outcomes present; per class (None if undefined)."""
    onehot = y if _multilabel(y) else np.eye(prob.shape[1])[y]
    per = [
        float(roc_auc_score(onehot[:, c], prob[:, c])) if 0 < onehot[:, c].sum() < len(onehot) else None
        for c in range(prob.shape[1])
    ]
    defined = [a for a in per if a is not None]
    return (float(np.mean(defined)) if defined else float("nan")), per


def _scores(y: np.ndarray, prob: np.ndarray) -> ProbeResult:
    auroc, per = macro_auroc(y, prob)
    if _multilabel(y):
        f1 = f1_score(y, prob >= 0.5, average="macro", zero_division=0)
        return ProbeResult(auroc, float(f1), None, per, prob=prob)
    pred = prob.argmax(1)
    f1 = f1_score(y, pred, average="macro", labels=np.unique(y), zero_division=0)
    return ProbeResult(auroc, float(f1), float((pred == y).mean()), per, prob=prob)


def _standardize(train: np.ndarray, *others: np.ndarray) -> list[torch.Tensor]:
    x = torch.as_tensor(train)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    return [(torch.as_tensor(a) - mean) / std for a in (train, *others)]


def probabilities(logits: torch.Tensor, multilabel: bool) -> np.ndarray:
    """Class probabilities from logits (n, C): per-label sigmoid (multi-label) or softmax (multi-class)."""
    logits = logits.detach().float().cpu()
    return (logits.sigmoid() if multilabel else logits.softmax(-1)).numpy()


def linear_probe(
    train: Split, test: Split, n_classes: int, *, val: Split | None = None, epochs: int = LINEAR_PROBE.epochs,
    lr: float = LINEAR_PROBE.lr, batch_size: int = LINEAR_PROBE.batch_size, seed: int = 0,
) -> ProbeResult:
    """The paper's probe (:data:`~ecg_jepa.train.recipe.LINEAR_PROBE`): features standardised with the
    training statistics, one linear layer trained with AdamW and cross-entropy (multi-class) or binary cross-entropy (multi-label, targets (n, C)). With
    ``val``, the epoch with the best validation macro AUROC is the one scored on ``test``."""
    multilabel = _multilabel(train[1])
    x_tr, x_te, *x_val = _standardize(train[0], test[0], *([val[0]] if val else []))
    y_tr = torch.as_tensor(train[1]).float() if multilabel else torch.as_tensor(train[1]).long()
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head = nn.Linear(x_tr.shape[1], n_classes)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=LINEAR_PROBE.weight_decay)
    loss_fn = nn.functional.binary_cross_entropy_with_logits if multilabel else nn.functional.cross_entropy
    best = (-1.0, None, epochs)
    for epoch in range(1, epochs + 1):
        for idx in torch.randperm(len(x_tr), generator=gen).split(batch_size):
            loss = loss_fn(head(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if val:
            score = macro_auroc(val[1], probabilities(head(x_val[0]), multilabel))[0]
            if score > best[0]:
                best = (score, {k: v.clone() for k, v in head.state_dict().items()}, epoch)
    if val:
        head.load_state_dict(best[1])
    result = _scores(test[1], probabilities(head(x_te), multilabel))
    if val:
        result.val_auroc, result.chosen = best[0], f"epoch {best[2]} of {epochs}"
    return result


def logreg_probe(train: Split, test: Split, n_classes: int, *, val: Split | None = None, seed: int = 0) -> ProbeResult:
    """scikit-learn logistic regression (one per label when multi-label); the inverse regularisation C is
    chosen on ``val`` from a grid 10^-3 .. 10^1 that extends itself (a decade at a time, up to 10^-6 and
    10^4) while the best C sits at its edge (C = 1 without a validation split). A choice still at the edge
    is said in ``chosen``."""
    multilabel = _multilabel(train[1])
    x_tr, x_te, *x_val = (t.numpy() for t in _standardize(train[0], test[0], *([val[0]] if val else [])))

    def fit_predict(c: float, x: np.ndarray) -> np.ndarray:
        if not multilabel:
            model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x_tr, train[1])
            prob = np.zeros((len(x), n_classes))
            prob[:, model.classes_] = model.predict_proba(x)
            return prob
        cols = []
        for j in range(n_classes):
            y = train[1][:, j]
            if y.min() == y.max():  # a label without both outcomes in training: predict its rate
                cols.append(np.full(len(x), float(y[0])))
                continue
            cols.append(LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x_tr, y).predict_proba(x)[:, 1])
        return np.stack(cols, 1)

    if not val:
        return _scores(test[1], fit_predict(1.0, x_te))
    scores = {c: macro_auroc(val[1], fit_predict(c, x_val[0]))[0] for c in (1e-3, 1e-2, 1e-1, 1.0, 10.0)}
    while True:
        best = max(scores, key=lambda c: (scores[c], -abs(np.log10(c))))
        edge = best == min(scores) and best > 1e-6 or best == max(scores) and best < 1e4
        if not edge:
            break
        nxt = best / 10 if best == min(scores) else best * 10
        scores[nxt] = macro_auroc(val[1], fit_predict(nxt, x_val[0]))[0]
    result = _scores(test[1], fit_predict(best, x_te))
    at_edge = best in (min(scores), max(scores))
    result.val_auroc = scores[best]
    result.chosen = f"C={best:g}" + (f" (at the edge of the grid {min(scores):g}..{max(scores):g})" if at_edge else "")
    return result


PROBES: dict[str, Callable[..., ProbeResult]] = {"linear": linear_probe, "logreg": logreg_probe}
"""The probes on frozen features, by name: ``probe(train, test, n_classes, val=, seed=)``."""


def random_init(encoder: Encoder, seed: int) -> Encoder:
    """The baseline every downstream result is shown beside: an encoder of ``encoder``'s architecture with
    weights drawn from ``seed`` alone (on the CPU, the global random state left as it was, so one seed gives
    one encoder on any device), in eval mode on ``encoder``'s device."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        baseline = Encoder(dataclasses.replace(encoder.config))
    return baseline.to(next(encoder.parameters()).device).eval()


def beside_random_init(encoder: Encoder, seed: int,
                       run: Callable[[str, Encoder], ProbeResult]) -> dict[str, ProbeResult]:
    """``run(name, encoder)`` for ``encoder`` and for its :func:`random_init` baseline of ``seed``:
    {"pretrained": ..., "random init": ...}."""
    return {name: run(name, enc) for name, enc in (("pretrained", encoder), ("random init", random_init(encoder, seed)))}


def probe_against_random_init(encoder: Encoder, train: Dataset, test: Dataset, n_classes: int, seed: int = 0,
                              progress: bool = True) -> dict[str, ProbeResult]:
    """The paper's linear probe of ``encoder`` and of its :func:`random_init` baseline (``seed``), fit on
    the (x, label) dataset ``train``, scored on ``test``: {"pretrained": ..., "random init": ...}."""
    def run(name: str, enc: Encoder) -> ProbeResult:
        feats = [embed_dataset(enc, data, desc=f"{name}: {what}", progress=progress)
                 for data, what in ((train, "train"), (test, "test"))]
        return linear_probe(*feats, n_classes=n_classes, seed=seed)

    return beside_random_init(encoder, seed, run)
