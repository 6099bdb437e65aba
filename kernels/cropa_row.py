"""The row pass of split CroPA (``ecg_jepa/ops/cropa/split.py``) for T ≤ 64: per (batch, lead, head) one
dense T x T attention over the lead's own tokens, in one program holding the whole problem (one tile of
BLOCK_T ≥ T rows: no key loop, no online rescaling), and its backward in one program the same way.

PyTorch's fused kernels tile queries by 64 or 128 rows and pay a launch's worth of set-up per tile; at the
slot counts of ECG-JEPA (T = 16..50) most of such a tile is padding. Here the problem is the tile.

Addressing as in ``cropa_col.py``: q, k, v, o, do, dq, dk, dv are (B, H, N, d) with unit stride along d,
given by their (batch, head, token) strides; the LSE is (B, L, H, T_pad) fp32, natural log, given by its
(batch, lead, head) strides. Programs run over (batch, lead, head), the head fastest (for the model's packed
projection, neighbouring programs read neighbouring memory).
"""
import triton
import triton.language as tl

from .cropa_common import LN2, LOG2E, load_rows, store_rows


@triton.jit
def _problem(H, L, T, HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's (batch, lead, head), its token rows and their masks, and the feature offsets."""
    pid = tl.program_id(0)
    h = pid % H
    lead = (pid // H) % L
    b = pid // (H * L)
    slots = tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    return b, lead, h, slots, lead * T + slots, slots < T, offs_d, offs_d < HEAD_DIM


@triton.jit
def cropa_row_fwd_kernel(
    Q, K, V, O, LSE,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son, slb, sll, slh,
    H, L, T, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """O_row and LSE_row (natural log) of one lead's T x T attention. ``qk_scale``: scale · log2(e)."""
    b, lead, h, slots, rows, ok, offs_d, d_ok = _problem(H, L, T, HEAD_DIM, BLOCK_T, BLOCK_D)
    q = load_rows(Q + b * sqb + h * sqh, rows, sqn, offs_d, ok, d_ok, UPCAST)
    k = load_rows(K + b * skb + h * skh, rows, skn, offs_d, ok, d_ok, UPCAST)
    v = load_rows(V + b * svb + h * svh, rows, svn, offs_d, ok, d_ok, UPCAST)
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
    s = tl.where(ok[None, :], s, float("-inf"))
    top = tl.max(s, 1)
    p = tl.exp2(s - top[:, None])
    total = tl.sum(p, 1)
    out = tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION) / total[:, None]
    store_rows(O + b * sob + h * soh, rows, son, offs_d, ok, d_ok, out)
    tl.store(LSE + b * slb + lead * sll + h * slh + slots, (top + tl.log2(total)) * LN2, mask=ok)


@triton.jit
def cropa_row_bwd_kernel(
    Q, K, V, O, DO, LSE, DQ, DK, DV,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son, sgb, sgh, sgn,
    sdqb, sdqh, sdqn, sdkb, sdkh, sdkn, sdvb, sdvh, sdvn, slb, sll, slh,
    H, L, T, scale, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """The row pass's dq, dk, dv (written, not added) from the final output O and merged LSE:
    P = exp(S - LSE), D = rowsum(dO∘O), dS = P∘(dO·Vᵀ - D)."""
    b, lead, h, slots, rows, ok, offs_d, d_ok = _problem(H, L, T, HEAD_DIM, BLOCK_T, BLOCK_D)
    q = load_rows(Q + b * sqb + h * sqh, rows, sqn, offs_d, ok, d_ok, UPCAST)
    k = load_rows(K + b * skb + h * skh, rows, skn, offs_d, ok, d_ok, UPCAST)
    v = load_rows(V + b * svb + h * svh, rows, svn, offs_d, ok, d_ok, UPCAST)
    do = load_rows(DO + b * sgb + h * sgh, rows, sgn, offs_d, ok, d_ok, UPCAST)
    o = load_rows(O + b * sob + h * soh, rows, son, offs_d, ok, d_ok, True)
    lse = tl.load(LSE + b * slb + lead * sll + h * slh + slots, mask=ok, other=0.0) * LOG2E
    delta = tl.sum(do.to(tl.float32) * o, 1)

    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
    p = tl.where(ok[:, None] & ok[None, :], tl.exp2(s - lse[:, None]), 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
    ds = (p * (dp - delta[:, None])).to(q.dtype)
    dv = tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=DOT_PRECISION)
    dq = tl.dot(ds, k, input_precision=DOT_PRECISION) * scale
    dk = tl.dot(tl.trans(ds), q, input_precision=DOT_PRECISION) * scale
    store_rows(DQ + b * sdqb + h * sdqh, rows, sdqn, offs_d, ok, d_ok, dq)
    store_rows(DK + b * sdkb + h * sdkh, rows, sdkn, offs_d, ok, d_ok, dk)
    store_rows(DV + b * sdvb + h * sdvh, rows, sdvn, offs_d, ok, d_ok, dv)
