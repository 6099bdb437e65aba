"""Linear probe: a frozen encoder's mean-pooled features, computed once, and one linear layer on top."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import f1_score, roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..model.encoder import Encoder


@torch.no_grad()
def embed_dataset(
    encoder: Encoder, data: Dataset, batch_size: int = 64, desc: str = "embedding", progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Features (n, D) float32 from ``encoder.embed`` in eval mode, and the labels (n,) of ``data``'s
    ``(x, label)`` items."""
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
    """Test-set scores of a multi-class linear probe."""

    accuracy: float
    macro_auroc: float
    macro_f1: float

    def __str__(self) -> str:
        return f"accuracy {self.accuracy:.3f}  macro AUROC {self.macro_auroc:.3f}  macro F1 {self.macro_f1:.3f}"


def linear_probe(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    n_classes: int,
    epochs: int = 10,
    lr: float = 0.01,
    batch_size: int = 16,
    seed: int = 0,
) -> ProbeResult:
    """The paper's probe: features standardised with the training statistics, one linear layer trained
    with AdamW (lr 0.01, batch 16, 10 epochs) and cross-entropy; scored on ``test``."""
    x_tr, y_tr = (torch.as_tensor(a) for a in train)
    x_te, y_te = (torch.as_tensor(a) for a in test)
    mean, std = x_tr.mean(0), x_tr.std(0).clamp_min(1e-6)
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    gen = torch.Generator().manual_seed(seed)
    head = nn.Linear(x_tr.shape[1], n_classes)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head.reset_parameters()
    opt = torch.optim.AdamW(head.parameters(), lr=lr)
    for _ in range(epochs):
        for idx in torch.randperm(len(x_tr), generator=gen).split(batch_size):
            loss = nn.functional.cross_entropy(head(x_tr[idx]), y_tr[idx].long())
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        prob = head(x_te).softmax(-1).numpy()
    y = y_te.numpy()
    present = np.unique(y)
    auroc = roc_auc_score(y, prob[:, present] / prob[:, present].sum(1, keepdims=True), multi_class="ovr",
                          labels=present) if len(present) > 2 else roc_auc_score(y == present[-1], prob[:, present[-1]])
    pred = prob.argmax(1)
    return ProbeResult(float((pred == y).mean()), float(auroc), float(f1_score(y, pred, average="macro")))
