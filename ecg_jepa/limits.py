"""The kernels' limits and the GPUs' resources, declared once, as plain numbers.

A leaf: it imports nothing (not torch, not the package), so the build (:mod:`ecg_jepa.build_ext`, which
passes the ``ECG_JEPA_*`` ones to ``csrc/`` as ``-D`` defines), the ops' capability data
(:mod:`ecg_jepa.ops`) and the offline kernel report (:mod:`ecg_jepa.kernel_report`) all read them from
here without importing one another.
"""
from __future__ import annotations

FUSED_MAX_HEAD_DIM = 128
"""The largest head dim of the fused CroPA kernels (Triton and CUDA; ``csrc/`` gets it as
``ECG_JEPA_MAX_HEAD_DIM``)."""

TRITON_FP32_MAX_HEAD_DIM = 64
"""The largest head dim at which the split backend runs its Triton column kernels in float32 (larger
fp32 head dims take the pure-torch column pass: the fp32 tiles would spill)."""

CUDA_TILE = 16
"""Slots per block and the side of every tensor-core tile of the CUDA kernels (``kTile`` in
``csrc/block.cuh``); the shared-memory mirror (:mod:`ecg_jepa.ops.cropa.cuda`) pads head dims to it."""

SMEM_PER_CTA: dict[tuple[int, int], int] = {
    (8, 0): 166912, (8, 6): 101376, (8, 9): 101376, (9, 0): 232448, (10, 0): 232448, (12, 0): 101376,
}
"""Shared memory bytes one CTA may use (``cudaDevAttrMaxSharedMemoryPerBlockOptin``), by compute
capability, for GPUs described rather than present."""

SMEM_PER_CTA_UNKNOWN = min(SMEM_PER_CTA.values())
"""What a GPU missing from :data:`SMEM_PER_CTA` is assumed to allow: the smallest of the table."""

SM_RESOURCES: dict[int, tuple[int, int, int, int]] = {
    90: (65536, 228 * 1024, 2048, 32),
    80: (65536, 164 * 1024, 2048, 32),
}
"""Per SM, by architecture (90: H100/H200, 80: A100): registers, shared memory bytes CTAs may share,
threads, CTAs."""
