"""The ``split`` CroPA backend: CroPA as two block-diagonal attentions, each in its own natural order, under
one softmax through the log-sum-exp.

- **Row pass** (lead-major order): L independent T x T dense attentions per (batch, head), returning
  output and LSE. On CUDA with 16-bit inputs and T ≤ 64 one Triton kernel per direction
  (``kernels/cropa_row.py``: one program per (batch, lead, head) holds the whole T x T problem); otherwise
  PyTorch's own fused attention on a free view: on CUDA the memory-efficient kernel
  (``aten::_efficient_attention_forward``; it beat flash and cuDNN on this problem on an H200,
  ``benchmarks/results/h200-20261130/rowpass.txt``), on the CPU the CPU flash kernel.
- **Column pass** (time-major order): T independent L x L attentions (a lead's own token excluded: it is
  in the row pass), merged with the row pass in place:
  ``LSE = logaddexp(LSE_row, LSE_col)``, ``O = e^(LSE_row − LSE)·O_row + e^(LSE_col − LSE)·O_col``.
  On CUDA one Triton kernel (``kernels/cropa_col.py``); on the CPU :func:`column_merge_torch`, the
  readable statement of the same algorithm.
- **Backward**: each pass's own backward with the final O and the final LSE (P = e^(S − LSE),
  D = rowsum(dO∘O)); the column backward adds into the row pass's dq, dk, dv in place.

Layouts: q, k, v (B, H, N, d) with unit stride along d, N = L·T lead-major. The row pass reads them as
(B·L, T, H, d) ("BMHK", the memory-efficient kernel's layout): free for q, k, v that are views of one
(B, N, 3, H, d) projection (what :class:`~ecg_jepa.CroPAAttention` makes) or of (B, N, H, d) memory,
one copy otherwise. The output and the gradients are (B, H, N, d) views of (B, N, H, d) memory (so the
module's ``transpose(1, 2).reshape(B, N, D)`` is free); the LSE is (B, L, H, T_pad) fp32, natural log,
T_pad = T rounded up to 32 (the memory-efficient kernel's LSE alignment; padding +inf).
"""
from __future__ import annotations

import torch

from ...limits import TRITON_FP32_MAX_HEAD_DIM
from ..registry import device_guard, interpreter_active
from .fused import LOG2E, register, strides3, unit_last

LSE_ALIGN = 32
"""The memory-efficient kernel pads its LSE rows to a multiple of this many queries."""

COLUMN_TILE_ELEMENTS = 4096
"""Elements of one (slots x leads x head-dim) 16-bit tile of the column kernels, half as many in fp32 (whose
products run on the CUDA cores): the slot block is as large as that allows, at most 64. So every tile stays
in registers with no spill on sm_80 and sm_90 at 4 warps (``python -m ecg_jepa.kernel_report``) for up to
16 leads, up to d = 128 in 16 bits and d = 64 in fp32 (beyond that, fp32 takes the pure-torch column pass).
With more leads the slot block bottoms out at 1 and the tile grows past this (checked for 17 leads only
under the interpreter)."""


def padded_slots(n_slots: int) -> int:
    return -(-n_slots // LSE_ALIGN) * LSE_ALIGN


def token_major(b: int, h: int, n: int, d: int, like: torch.Tensor) -> torch.Tensor:
    """An uninitialised (B, H, N, d) tensor over (B, N, H, d) memory."""
    return like.new_empty((b, n, h, d)).transpose(1, 2)


def bmhk(x: torch.Tensor, n_leads: int) -> torch.Tensor:
    """(B, H, N, d) -> (B·L, T, H, d), the row pass's layout: a view where x's strides allow (the model's
    packed qkv, (B, N, H, d) memory), a copy otherwise; unit stride along d either way."""
    b, h, n, d = x.shape
    rows = x.transpose(1, 2).unflatten(1, (n_leads, n // n_leads)).flatten(0, 1)
    return rows if rows.stride(-1) == 1 else rows.contiguous()


def _lse_rows(lse: torch.Tensor) -> torch.Tensor:
    """(B, L, H, T_pad) -> (B·L, H, T_pad), a view."""
    return lse.flatten(0, 1)


def _launch(kernel, grid, args, kwargs) -> None:
    with device_guard(args[0]):
        kernel[grid](*args, **kwargs)


# ---- row pass -----------------------------------------------------------------------------------------

ROW_TRITON_MAX_SLOTS = 64
"""The Triton row kernels hold a lead's whole T x T problem in one tile: T up to this."""

ROW_KERNEL = {"choice": "auto"}
"""The row pass's kernel on CUDA: "auto" (Triton where :func:`triton_rows` allows, else the library's),
"triton" or "library" (the memory-efficient kernel); the benchmark sets it to time both."""


def triton_rows(x: torch.Tensor, n_leads: int) -> bool:
    """Whether the row pass runs as the Triton kernels for tensors like x (B, H, N, d): on CUDA, 16-bit,
    T ≤ :data:`ROW_TRITON_MAX_SLOTS`, d ≤ 128 (and ``ROW_KERNEL`` allows)."""
    if not x.is_cuda or ROW_KERNEL["choice"] == "library":
        return False
    return (x.dtype in (torch.float16, torch.bfloat16) and x.shape[-2] // n_leads <= ROW_TRITON_MAX_SLOTS
            and x.shape[-1] <= 128)


def _triton_kwargs(q: torch.Tensor, block_t: int) -> dict:
    import triton

    return dict(HEAD_DIM=q.shape[-1], BLOCK_T=block_t, BLOCK_D=max(16, triton.next_power_of_2(q.shape[-1])),
                UPCAST=interpreter_active(), DOT_PRECISION="ieee")


def row_block(n_slots: int) -> int:
    import triton

    return max(16, triton.next_power_of_2(n_slots))


def row_fwd_launch(q, k, v, out, lse, n_leads: int, scale: float):
    """(kernel, grid, args, kwargs) of the Triton row pass (also what ``ecg_jepa.kernel_report`` compiles)."""
    from ecg_jepa.kernels.cropa_row import cropa_row_fwd_kernel

    b, h, n, d = q.shape
    t = n // n_leads
    args = (q, k, v, out, lse, *strides3(q), *strides3(k), *strides3(v), *strides3(out), *strides3(lse),
            h, n_leads, t, scale * LOG2E)
    return cropa_row_fwd_kernel, (b * n_leads * h,), args, dict(**_triton_kwargs(q, row_block(t)), num_warps=4)


def row_bwd_launch(grad_out, q, k, v, out, lse, dq, dk, dv, n_leads: int, scale: float):
    """(kernel, grid, args, kwargs) of the Triton row backward."""
    from ecg_jepa.kernels.cropa_row import cropa_row_bwd_kernel

    b, h, n, d = q.shape
    t = n // n_leads
    args = (q, k, v, out, grad_out, lse, dq, dk, dv,
            *strides3(q), *strides3(k), *strides3(v), *strides3(out), *strides3(grad_out),
            *strides3(dq), *strides3(dk), *strides3(dv), *strides3(lse), h, n_leads, t, scale, scale * LOG2E)
    return cropa_row_bwd_kernel, (b * n_leads * h,), args, dict(**_triton_kwargs(q, row_block(t)), num_warps=8)


def row_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_leads: int, scale: float,
                rows: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The row pass: out (B, H, N, d) over (B, N, H, d) memory and its natural-log LSE (B, L, H, T_pad).
    ``rows``: "triton" or "library" (default: :func:`triton_rows`)."""
    b, h, n, d = q.shape
    t = n // n_leads
    if triton_rows(q, n_leads) if rows is None else rows == "triton":
        q, k, v = (unit_last(x) for x in (q, k, v))
        out = token_major(b, h, n, d, q)
        lse = q.new_empty((b, n_leads, h, padded_slots(t)), dtype=torch.float32)
        if t % LSE_ALIGN:
            lse[..., t:] = float("inf")
        _launch(*row_fwd_launch(q, k, v, out, lse, n_leads, scale))
        return out, lse
    qr, kr, vr = (bmhk(x, n_leads) for x in (q, k, v))
    if q.is_cuda:
        out, lse = torch.ops.aten._efficient_attention_forward(
            qr, kr, vr, None, None, None, None, None, 0.0, 0, True, scale=scale)[:2]
        # out: (B·L, T, H, d) contiguous = (B, N, H, d) memory; lse: (B·L, H, T_pad), its padding +inf here
        # (the backward may read it for the rows past T of its last query block: P = e^(S − inf) = 0 there)
        lse = lse.view(b, n_leads, h, lse.shape[-1])
        if t % LSE_ALIGN:
            lse[..., t:] = float("inf")
        return out.view(b, n, h, d).transpose(1, 2), lse
    out_r, lse_r = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        qr.transpose(1, 2), kr.transpose(1, 2), vr.transpose(1, 2), 0.0, False, scale=scale)
    out = token_major(b, h, n, d, q)
    out.transpose(1, 2).view(b * n_leads, t, h, d).copy_(out_r.transpose(1, 2))
    lse = lse_r.new_full((b, n_leads, h, padded_slots(t)), float("inf"))
    lse[..., :t] = lse_r.view(b, n_leads, h, t)
    return out, lse


def row_backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                 lse: torch.Tensor, n_leads: int, scale: float, rows: str | None = None) -> tuple[torch.Tensor, ...]:
    """The row pass's (dq, dk, dv), each (B, H, N, d) over (B, N, H, d) memory, from the final output
    ``out`` and merged ``lse`` (so P and D are the joint softmax's)."""
    b, h, n, d = q.shape
    t = n // n_leads
    if triton_rows(q, n_leads) if rows is None else rows == "triton":
        grad_out, q, k, v, out = (unit_last(x) for x in (grad_out, q, k, v, out))
        dq, dk, dv = (token_major(b, h, n, d, q) for _ in range(3))
        _launch(*row_bwd_launch(grad_out, q, k, v, out, lse, dq, dk, dv, n_leads, scale))
        return dq, dk, dv
    qr, kr, vr, outr, gr = (bmhk(x, n_leads) for x in (q, k, v, out, grad_out))
    if outr.stride(1) != h * d:  # the memory-efficient backward assumes out's rows H·d apart (its own layout)
        outr = outr.contiguous()
    if q.is_cuda:
        unused = q.new_empty((), dtype=torch.int64)  # philox seed and offset: read only with dropout
        grads = torch.ops.aten._efficient_attention_backward(
            gr, qr, kr, vr, None, outr, None, None, t, t, _lse_rows(lse), 0.0, unused, unused, 0, False,
            scale=scale)[:3]
        return tuple(x.view(b, n, h, d).transpose(1, 2) for x in grads)
    grads = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        gr.transpose(1, 2), qr.transpose(1, 2), kr.transpose(1, 2), vr.transpose(1, 2), outr.transpose(1, 2),
        _lse_rows(lse)[..., :t], 0.0, False, scale=scale)
    result = []
    for g in grads:  # (B·L, H, T, d) -> (B, H, N, d) over (B, N, H, d) memory
        x = token_major(b, h, n, d, q)
        x.transpose(1, 2).view(b * n_leads, t, h, d).copy_(g.transpose(1, 2))
        result.append(x)
    return tuple(result)


# ---- column pass, pure torch (the CPU path and the readable statement) ----------------------------------

def _by_slot(x: torch.Tensor, n_leads: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, H, N, d) -> (B, H, T, L, d) in ``dtype``: each slot's L leads side by side."""
    return x.unflatten(2, (n_leads, x.shape[2] // n_leads)).transpose(2, 3).to(dtype)


def _column_scores(qc: torch.Tensor, kc: torch.Tensor, scale: float) -> torch.Tensor:
    """Each slot's L x L column scores (B, H, T, L, L), a lead's own key at -inf (it is in the row pass)."""
    s = (qc @ kc.transpose(-1, -2)) * scale
    return s.masked_fill(torch.eye(qc.shape[-2], dtype=torch.bool, device=s.device), float("-inf"))


def _wide(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def column_merge_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                       n_leads: int, scale: float) -> None:
    """The column pass and the merge, in place: ``out`` and ``lse`` hold the row pass's result on entry and
    CroPA's on exit."""
    t = q.shape[2] // n_leads
    wide = _wide(q.dtype)
    qc, kc, vc, o_row = (_by_slot(x, n_leads, wide) for x in (q, k, v, out))
    lse_row = lse[..., :t].permute(0, 2, 3, 1).to(wide)  # (B, H, T, L)
    s = _column_scores(qc, kc, scale)
    lse_col = s.logsumexp(-1)  # -inf where a slot has no other lead (L = 1)
    o_col = (s - lse_col.nan_to_num(neginf=0.0)[..., None]).exp() @ vc
    merged = torch.logaddexp(lse_row, lse_col)
    o = (lse_row - merged).exp()[..., None] * o_row + (lse_col - merged).exp()[..., None] * o_col
    out.unflatten(2, (n_leads, t)).copy_(o.transpose(2, 3))
    lse[..., :t] = merged.permute(0, 3, 1, 2)


def column_backward_torch(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          out: torch.Tensor, lse: torch.Tensor, dq: torch.Tensor, dk: torch.Tensor,
                          dv: torch.Tensor, n_leads: int, scale: float) -> None:
    """The column pass's gradients, added into (dq, dk, dv) in place."""
    t = q.shape[2] // n_leads
    wide = _wide(q.dtype)
    qc, kc, vc, oc, gc = (_by_slot(x, n_leads, wide) for x in (q, k, v, out, grad_out))
    p = (_column_scores(qc, kc, scale) - lse[..., :t].permute(0, 2, 3, 1).to(wide)[..., None]).exp()  # P of the joint softmax
    ds = p * (gc @ vc.transpose(-1, -2) - (gc * oc).sum(-1, keepdim=True))
    for grad, extra in ((dq, ds @ kc * scale), (dk, ds.transpose(-1, -2) @ qc * scale), (dv, p.transpose(-1, -2) @ gc)):
        view = grad.unflatten(2, (n_leads, t))
        view.copy_(view.to(wide) + extra.transpose(2, 3))


# ---- column pass, Triton ------------------------------------------------------------------------------

def column_launch(q: torch.Tensor, n_leads: int) -> tuple[int, int, int, int]:
    """(BLOCK_T, BLOCK_D, LANES, programs) of the column kernels for q's shape."""
    import triton

    b, h, n, d = q.shape
    lanes = max(16, triton.next_power_of_2(n_leads))
    block_d = max(16, triton.next_power_of_2(d))
    elements = COLUMN_TILE_ELEMENTS // (2 if q.dtype == torch.float32 else 1)
    block_t = max(1, min(64, elements // (lanes * block_d), triton.next_power_of_2(n // n_leads)))
    return block_t, block_d, lanes, b * h * triton.cdiv(n // n_leads, block_t)


def column_fwd_launch(q, k, v, out, lse, n_leads: int, scale: float):
    """(kernel, grid, args, kwargs) of the column pass + merge (also what ``ecg_jepa.kernel_report`` compiles)."""
    from ecg_jepa.kernels.cropa_col import cropa_col_fwd_kernel

    b, h, n, d = q.shape
    block_t, block_d, lanes, programs = column_launch(q, n_leads)
    args = (q, k, v, out, lse, *strides3(q), *strides3(k), *strides3(v), *strides3(out), *strides3(lse),
            h, n_leads, n // n_leads, scale * LOG2E)
    kwargs = dict(HEAD_DIM=d, BLOCK_T=block_t, BLOCK_D=block_d, LANES=lanes, UPCAST=interpreter_active(),
                  DOT_PRECISION="ieee", num_warps=4)
    return cropa_col_fwd_kernel, (programs,), args, kwargs


def column_bwd_launch(grad_out, q, k, v, out, lse, dq, dk, dv, n_leads: int, scale: float):
    """(kernel, grid, args, kwargs) of the column backward."""
    from ecg_jepa.kernels.cropa_col import cropa_col_bwd_kernel

    b, h, n, d = q.shape
    block_t, block_d, lanes, programs = column_launch(q, n_leads)
    args = (q, k, v, out, grad_out, lse, dq, dk, dv,
            *strides3(q), *strides3(k), *strides3(v), *strides3(out), *strides3(grad_out),
            *strides3(dq), *strides3(dk), *strides3(dv), *strides3(lse), h, n_leads, n // n_leads, scale, scale * LOG2E)
    kwargs = dict(HEAD_DIM=d, BLOCK_T=block_t, BLOCK_D=block_d, LANES=lanes, UPCAST=interpreter_active(),
                  DOT_PRECISION="ieee", num_warps=4)
    return cropa_col_bwd_kernel, (programs,), args, kwargs


def column_merge_triton(q, k, v, out, lse, n_leads: int, scale: float) -> None:
    """:func:`column_merge_torch` as one Triton kernel (``kernels/cropa_col.py``)."""
    q, k, v = (unit_last(x) for x in (q, k, v))
    _launch(*column_fwd_launch(q, k, v, out, lse, n_leads, scale))


def column_backward_triton(grad_out, q, k, v, out, lse, dq, dk, dv, n_leads: int, scale: float) -> None:
    """:func:`column_backward_torch` as one Triton kernel."""
    grad_out, q, k, v, out = (unit_last(x) for x in (grad_out, q, k, v, out))
    _launch(*column_bwd_launch(grad_out, q, k, v, out, lse, dq, dk, dv, n_leads, scale))


def triton_columns(x: torch.Tensor) -> bool:
    """Whether the column pass runs as Triton kernels for tensors like x (B, H, N, d): on CUDA, except fp32
    with d > :data:`TRITON_FP32_MAX_HEAD_DIM`; on the CPU the pure-torch pass (the kernels are tested
    there under the interpreter through :func:`forward`'s ``columns`` argument)."""
    return x.is_cuda and (x.dtype != torch.float32 or x.shape[-1] <= TRITON_FP32_MAX_HEAD_DIM)


# ---- the op ---------------------------------------------------------------------------------------------

def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_leads: int, scale: float,
            columns: str | None = None, rows: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CroPA attention: out (B, H, N, d) over (B, N, H, d) memory and the merged LSE (B, L, H, T_pad).
    ``columns``: "triton" or "torch" (default: :func:`triton_columns`); ``rows``: "triton" or "library"
    (default: :func:`triton_rows`)."""
    out, lse = row_forward(q, k, v, n_leads, scale, rows)
    use_triton = triton_columns(q) if columns is None else columns == "triton"
    (column_merge_triton if use_triton else column_merge_torch)(q, k, v, out, lse, n_leads, scale)
    return out, lse


def backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
             lse: torch.Tensor, n_leads: int, scale: float, columns: str | None = None, rows: str | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv), each (B, H, N, d) over (B, N, H, d) memory."""
    dq, dk, dv = row_backward(grad_out, q, k, v, out, lse, n_leads, scale, rows)
    use_triton = triton_columns(q) if columns is None else columns == "triton"
    (column_backward_triton if use_triton else column_backward_torch)(
        grad_out, q, k, v, out, lse, dq, dk, dv, n_leads, scale)
    return dq, dk, dv


def _fwd_fake(q, k, v, n_leads, scale):
    b, h, n, d = q.shape
    return token_major(b, h, n, d, q), q.new_empty((b, n_leads, h, padded_slots(n // n_leads)), dtype=torch.float32)


def _bwd_fake(grad_out, q, k, v, out, lse, n_leads, scale):
    b, h, n, d = q.shape
    return tuple(token_major(b, h, n, d, q) for _ in range(3))


def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_leads: int, scale: float
            ) -> tuple[torch.Tensor, torch.Tensor]:
    return forward(q, k, v, n_leads, scale)


def _bwd_op(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
            lse: torch.Tensor, n_leads: int, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return backward(grad_out, q, k, v, out, lse, n_leads, scale)


attention, cropa_split_fwd, cropa_split_bwd = register("split", _fwd_op, _bwd_op, _fwd_fake, _bwd_fake)


WARM_UP_SLOTS = (1, 2, 16, 17, 32, 33, 48)
"""Slot counts that meet every compiled variant of split's Triton kernels: the column kernels' slot block
(1, 2, then 4, which T only caps), the row kernels' tile (16, 32, 64 for T ≤ 64; above, the library's
kernel, compiled ahead of time) and Triton's specialisation of T (1, divisible by 16, neither)."""


def warm_up(device: torch.device | str, dtype: torch.dtype, head_dim: int, heads: int, n_leads: int,
            grad: bool = True) -> int:
    """Compile every Triton-kernel variant (row and column) a run with this model shape can meet (by running
    the op once per
    :data:`WARM_UP_SLOTS` on a batch of one, laid out as :class:`~ecg_jepa.CroPAAttention` lays it out), so
    none compiles inside a timed or training step. Returns the number of slot counts run."""
    for t in WARM_UP_SLOTS:
        qkv = torch.randn(1, n_leads * t, 3, heads, head_dim, device=device, dtype=dtype, requires_grad=grad)
        out = attention(*qkv.permute(2, 0, 3, 1, 4), n_leads, head_dim ** -0.5)
        if grad:
            out.sum().backward()
    return len(WARM_UP_SLOTS)
