"""What large-run users watch: the model FLOPs of a pretraining step, the card's bf16 peak, memory."""
from __future__ import annotations

import resource

import torch

from ..constants import N_SLOTS, PATCH
from ..model.jepa import JEPA

# Dense bf16 tensor-core peaks from the vendor's data sheets (TFLOP/s, without sparsity), by device name.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 NVL": 835.0,
                    "H100 PCIe": 756.0, "H100": 756.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


def bf16_peak_tflops(device: torch.device) -> float | None:
    """The card's dense bf16 peak from :data:`BF16_PEAK_TFLOPS` (first name contained in the device's), or
    None on the CPU and on cards not in the table."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def _encoder_flops(dim: int, depth: int, mlp_ratio: float, tokens: int, keys: int) -> float:
    """Forward FLOPs of an encoder stack over ``tokens`` tokens that each attend ``keys`` keys: the
    matrix products (qkv, proj, MLP: (8 + 4·mlp_ratio)·D² multiply-adds per token) and attention (QKᵀ and
    PV: 2·D·keys)."""
    per_token = 2 * (4 + 2 * mlp_ratio) * dim * dim + 4 * dim * keys
    return float(depth * per_token * tokens)


def step_flops(model: JEPA, batch: int, n_visible: int) -> float:
    """Model FLOPs of one pretraining step on ``batch`` ECGs with ``n_visible`` visible slots: the teacher's
    forward over every token, the student's forward and backward (3x) over the visible ones, the
    predictor's forward and backward over each lead's 50 tokens (the usual 'model FLOPs' of MFU: no
    recomputation, no elementwise work)."""
    enc, pred = model.encoder.config, model.predictor
    n_leads = len(enc.leads)
    embed = 2 * PATCH * enc.dim
    teacher = _encoder_flops(enc.dim, enc.depth, enc.mlp_ratio, n_leads * N_SLOTS, N_SLOTS + n_leads - 1)
    teacher += embed * n_leads * N_SLOTS
    student = _encoder_flops(enc.dim, enc.depth, enc.mlp_ratio, n_leads * n_visible, n_visible + n_leads - 1)
    student += embed * n_leads * n_visible
    p_dim = pred.predictor_embed.out_features
    p_depth = len(pred.predictor_blocks.blocks)
    p_mlp = pred.predictor_blocks.blocks[0].mlp.fc1.out_features / p_dim
    predictor = _encoder_flops(p_dim, p_depth, p_mlp, n_leads * N_SLOTS, N_SLOTS)
    predictor += 2 * enc.dim * p_dim * n_leads * (n_visible + (N_SLOTS - n_visible))  # embed in, project out
    return batch * (teacher + 3 * student + 3 * predictor)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch (MB), or the process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
