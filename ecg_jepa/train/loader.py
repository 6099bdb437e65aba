"""The pretraining input pipeline: step s's batch for this rank, built ahead of time by loader workers.

Everything that reads data values happens here, on the host, before the batch reaches the GPU: the
samples are checked to be finite, the step's slot mask is drawn and validated, and its slot ids are
computed (:class:`~ecg_jepa.ops.layout.SlotMask`). The training step receives pinned tensors it moves with
``non_blocking`` copies and never has to read back. Step s's batch and mask depend on (seed, s) alone, so
a resumed run sees exactly what an uninterrupted one would have.
"""
from __future__ import annotations

import signal

import torch
from torch.utils.data import DataLoader, Dataset

from ..ops.layout import SlotMask

SLOT_FIELDS = ("hidden", "visible", "hidden_ids", "order")


class StepBatches(Dataset):
    """Item ``s``: {"step", "x" (B_rank, L, S) float32, the slot mask's tensors (:data:`SLOT_FIELDS`)}, or
    {"step", "error": message} when the batch cannot be used (the training loop raises it as one line)."""

    def __init__(self, data: Dataset, indices, mask, part: slice) -> None:
        self.data, self.indices, self.mask, self.part = data, indices, mask, part

    def __getitem__(self, step: int) -> dict:
        idx = self.indices(step)[self.part].tolist()
        items = self.data.__getitems__(idx) if hasattr(self.data, "__getitems__") else [self.data[i] for i in idx]
        x = torch.stack([torch.as_tensor(item[0], dtype=torch.float32) for item in items])
        finite = torch.isfinite(x).flatten(1).all(1)
        if not finite.all():
            bad = [idx[i] for i in (~finite).nonzero().flatten().tolist()]
            return {"step": step, "error": f"step {step}: ECG(s) {bad[:5]} of the dataset hold NaN or infinite samples; "
                                           "clean or drop them (ecg-jepa prepare-data refuses such records)"}
        mask = self.mask(step)
        slots = SlotMask.of(mask[self.part] if mask.dim() == 2 else mask, len(x))
        return {"step": step, "x": x, **{name: getattr(slots, name) for name in SLOT_FIELDS}}


def _ignore_interrupts(worker_id: int) -> None:
    """Workers leave Ctrl-C (SIGINT) to the training process, which checkpoints and then stops them; a
    SIGTERM ends them (the training process, told too, checkpoints what it has done)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def step_loader(batches: StepBatches, start: int, steps: int, workers: int, pin: bool) -> DataLoader:
    """Batches of steps ``start``..``steps - 1`` in order, built by ``workers`` processes a few steps ahead."""
    return DataLoader(batches, batch_size=None, sampler=range(start, steps), num_workers=workers, pin_memory=pin,
                      prefetch_factor=4 if workers > 0 else None, worker_init_fn=_ignore_interrupts)


def quiet_worker_deaths(batches) -> None:
    """Let the loader's workers die without an exception landing in the middle of a training step.

    PyTorch's loader raises from a SIGCHLD handler as soon as a worker dies, wherever the training process
    is; a SIGTERM to the whole process group (a scheduler's pre-emption) kills the workers, so that
    exception would tear down a step the signal asked to finish. Unregistered, a dead worker shows at the
    next batch request instead (within ``MP_STATUS_CHECK_INTERVAL``, 5 s), where the training loop decides
    whether it was the stop signal or a real failure."""
    from torch.utils.data._utils import signal_handling

    if getattr(batches, "_worker_pids_set", False):
        signal_handling._remove_worker_pids(id(batches))
        batches._worker_pids_set = False


def to_device(batch: dict, device: torch.device) -> tuple[torch.Tensor, SlotMask]:
    """(x, slot mask) of a loaded batch on ``device`` (non-blocking copies of pinned memory)."""
    move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
    return move(batch["x"]), SlotMask(*(move(batch[name]) for name in SLOT_FIELDS))
