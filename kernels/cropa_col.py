"""The column pass of split CroPA (``ecg_jepa/ops/cropa/split.py``): for every slot t, the L x L attention
of the leads at t (a lead's own token excluded: it belongs to the row pass), merged with the row pass's
result through the log-sum-exp, and its backward.

One program per (batch, head, block of BLOCK_T slots) holds every lead's rows at those slots. Those rows
are at once the queries and the keys of the block's column problems, so a program loads each of its
tiles once, all at the start and independently of each other (one round trip to memory, not one per
lead), and writes its gradients as their only owner (no atomics).

Tiles are (BLOCK_T, LANES, BLOCK_D): slot x lead x feature, LANES the leads padded to a power of two ≥ 16
(a tensor-core tile's side). The products are batched over slots (``tl.dot`` on 3-D operands: per slot an
(L x d)·(d x L) and an (L x L)·(L x d) product), scores and probabilities stay in registers.

Addressing: q, k, v, o, do, dq, dk, dv are (B, H, N, d) with unit stride along d, N = L·T lead-major,
given by their (batch, head, token) strides; the log-sum-exp is (B, L, H, T_pad) fp32, natural log,
given by its (batch, lead, head) strides.
"""
import triton
import triton.language as tl

from .cropa_common import LN2, LOG2E


@triton.jit
def _tile(base, tok, stride_n, offs_d, ok, d_ok, UPCAST: tl.constexpr):
    """The (BLOCK_T, LANES, BLOCK_D) tile of rows ``tok`` (BLOCK_T, LANES), zero outside ``ok``; fp32 under
    ``UPCAST`` (the CPU interpreter's 16-bit dots are wrong)."""
    x = tl.load(base + tok[:, :, None] * stride_n + offs_d[None, None, :], mask=ok[:, :, None] & d_ok[None, None, :],
                other=0.0)
    if UPCAST:
        x = x.to(tl.float32)
    return x


@triton.jit
def _store_tile(base, tok, stride_n, offs_d, ok, d_ok, x):
    tl.store(base + tok[:, :, None] * stride_n + offs_d[None, None, :], x.to(base.dtype.element_ty),
             mask=ok[:, :, None] & d_ok[None, None, :])




@triton.jit
def _block(H, L, T, HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, LANES: tl.constexpr):
    """This program's (batch, head), its rows ``tok`` (BLOCK_T, LANES) and their masks, the feature offsets,
    and which (query lead, key lead) pairs of a slot are column pairs (BLOCK_T, LANES, LANES)."""
    pid = tl.program_id(0)
    blocks = tl.cdiv(T, BLOCK_T)
    bh = pid // blocks
    slots = (pid % blocks) * BLOCK_T + tl.arange(0, BLOCK_T)
    lanes = tl.arange(0, LANES)
    offs_d = tl.arange(0, BLOCK_D)
    ok = (slots[:, None] < T) & (lanes[None, :] < L)
    pair = ok[:, :, None] & (lanes[None, None, :] < L) & (lanes[None, :, None] != lanes[None, None, :])
    return bh // H, bh % H, lanes[None, :] * T + slots[:, None], ok, offs_d, offs_d < HEAD_DIM, pair, slots, lanes


@triton.jit
def cropa_col_fwd_kernel(
    Q, K, V, O, LSE,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son, slb, sll, slh,
    H, L, T, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, LANES: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Column pass + merge. On entry O and LSE hold the row pass's output and natural-log LSE; on exit
    the CroPA output and the merged LSE (in place: each element is read and written by this program only).
    ``qk_scale`` is the score scale times log2(e)."""
    b, h, tok, ok, offs_d, d_ok, pair, slots, lanes = _block(H, L, T, HEAD_DIM, BLOCK_T, BLOCK_D, LANES)
    q = _tile(Q + b * sqb + h * sqh, tok, sqn, offs_d, ok, d_ok, UPCAST)
    k = _tile(K + b * skb + h * skh, tok, skn, offs_d, ok, d_ok, UPCAST)
    v = _tile(V + b * svb + h * svh, tok, svn, offs_d, ok, d_ok, UPCAST)
    lse_ptr = LSE + b * slb + h * slh + lanes[None, :] * sll + slots[:, None]
    lse_row = tl.load(lse_ptr, mask=ok, other=0.0) * LOG2E
    o_base = O + b * sob + h * soh
    o_row = _tile(o_base, tok, son, offs_d, ok, d_ok, True)

    s = tl.dot(q, tl.trans(k, 0, 2, 1), input_precision=DOT_PRECISION) * qk_scale  # (BLOCK_T, LANES, LANES)
    s = tl.where(pair, s, float("-inf"))
    top_col = tl.max(s, 2)
    has_col = top_col > float("-inf")  # L = 1: no column keys, the row pass is the answer
    p = tl.exp2(s - tl.where(has_col, top_col, 0.0)[:, :, None])
    l_col = tl.sum(p, 2)
    o_col = tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION) / tl.where(has_col, l_col, 1.0)[:, :, None]
    lse_col = tl.where(has_col, top_col + tl.log2(tl.where(has_col, l_col, 1.0)), float("-inf"))

    # merge: LSE = logaddexp(row, col), O = w_row·O_row + w_col·O_col (base 2 inside)
    top = tl.maximum(lse_row, lse_col)
    w_row = tl.exp2(lse_row - top)
    w_col = tl.exp2(lse_col - top)
    total = w_row + w_col
    out = (w_row / total)[:, :, None] * o_row + (w_col / total)[:, :, None] * o_col
    _store_tile(o_base, tok, son, offs_d, ok, d_ok, out)
    tl.store(lse_ptr, (top + tl.log2(total)) * LN2, mask=ok)


@triton.jit
def cropa_col_bwd_kernel(
    Q, K, V, O, DO, LSE, DQ, DK, DV,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son, sgb, sgh, sgn,
    sdqb, sdqh, sdqn, sdkb, sdkh, sdkn, sdvb, sdvh, sdvn, slb, sll, slh,
    H, L, T, scale, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, LANES: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """The column pass's gradients, added into DQ, DK, DV (which hold the row pass's): with the final
    output O and merged LSE, P = exp(S - LSE), D = rowsum(dO∘O), dS = P∘(dO·Vᵀ - D)."""
    b, h, tok, ok, offs_d, d_ok, pair, slots, lanes = _block(H, L, T, HEAD_DIM, BLOCK_T, BLOCK_D, LANES)
    q = _tile(Q + b * sqb + h * sqh, tok, sqn, offs_d, ok, d_ok, UPCAST)
    k = _tile(K + b * skb + h * skh, tok, skn, offs_d, ok, d_ok, UPCAST)
    v = _tile(V + b * svb + h * svh, tok, svn, offs_d, ok, d_ok, UPCAST)
    do = _tile(DO + b * sgb + h * sgh, tok, sgn, offs_d, ok, d_ok, UPCAST)
    o = _tile(O + b * sob + h * soh, tok, son, offs_d, ok, d_ok, True)
    lse = tl.load(LSE + b * slb + h * slh + lanes[None, :] * sll + slots[:, None], mask=ok, other=0.0) * LOG2E
    delta = tl.sum(do.to(tl.float32) * o, 2)

    s = tl.dot(q, tl.trans(k, 0, 2, 1), input_precision=DOT_PRECISION) * qk_scale  # (BLOCK_T, Lq, Lk)
    p = tl.where(pair, tl.exp2(s - lse[:, :, None]), 0.0)
    dp = tl.dot(do, tl.trans(v, 0, 2, 1), input_precision=DOT_PRECISION)
    ds = (p * (dp - delta[:, :, None])).to(q.dtype)
    dv = tl.dot(tl.trans(p.to(do.dtype), 0, 2, 1), do, input_precision=DOT_PRECISION)
    dq = tl.dot(ds, k, input_precision=DOT_PRECISION) * scale
    dk = tl.dot(tl.trans(ds, 0, 2, 1), q, input_precision=DOT_PRECISION) * scale
    # add into the row pass's gradients: the three reads issued together, before any write
    dq_base, dk_base, dv_base = DQ + b * sdqb + h * sdqh, DK + b * sdkb + h * sdkh, DV + b * sdvb + h * sdvh
    dq += _tile(dq_base, tok, sdqn, offs_d, ok, d_ok, True)
    dk += _tile(dk_base, tok, sdkn, offs_d, ok, d_ok, True)
    dv += _tile(dv_base, tok, sdvn, offs_d, ok, d_ok, True)
    _store_tile(dq_base, tok, sdqn, offs_d, ok, d_ok, dq)
    _store_tile(dk_base, tok, sdkn, offs_d, ok, d_ok, dk)
    _store_tile(dv_base, tok, sdvn, offs_d, ok, d_ok, dv)
