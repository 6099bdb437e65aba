"""Pieces shared by the CroPA attention kernels.

Layout: every tensor is (B, H, N, d) with unit stride along d and N = L·T lead-major (token = lead·T +
slot); a (batch, head) pair is addressed through its base pointer and its row stride.
"""
import triton
import triton.language as tl

LN2: tl.constexpr = tl.constexpr(0.6931471805599453)
"""ln 2: the kernels' base-2 log-sum-exp times it is the natural one the backward and users read."""
LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)
"""log2(e): a natural-log log-sum-exp times it is the base-2 one the kernels' exp2 takes."""


@triton.jit
def load_rows(base, rows, stride_n, offs_d, row_ok, d_ok, UPCAST: tl.constexpr):
    """The (len(rows), BLOCK_D) tile of a row-major (N, d) matrix at ``base`` (zero outside the masks),
    upcast to fp32 under ``UPCAST`` (the CPU interpreter's dots are wrong in 16 bits)."""
    x = tl.load(base + rows[:, None] * stride_n + offs_d[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    if UPCAST:
        x = x.to(tl.float32)
    return x


@triton.jit
def store_rows(base, rows, stride_n, offs_d, row_ok, d_ok, x):
    """Store a (len(rows), BLOCK_D) tile into a row-major (N, d) matrix at ``base``, in its dtype."""
    tl.store(base + rows[:, None] * stride_n + offs_d[None, :], x.to(base.dtype.element_ty),
             mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def pick(tile, lanes, m):
    """Column ``m`` of a (BLOCK_T, LANES) tile: a (BLOCK_T,) vector."""
    return tl.sum(tl.where(lanes[None, :] == m, tile, 0.0), 1)


@triton.jit
def row_block(q, k, v, key_ok, m_i, l_i, acc, qk_scale, DOT_PRECISION: tl.constexpr):
    """One block of the row part's keys through FlashAttention's online softmax (base 2): the running
    maximum, sum and output (m_i, l_i, acc) of the query rows q after keys k (values v), ``key_ok`` masking
    keys past the lead's end."""
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
    s = tl.where(key_ok[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    p = tl.exp2(s - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return m_new, l_i, acc


@triton.jit
def finish_rows(o_base, lse_base, rows, stride_n, offs_d, row_ok, d_ok, acc, l_i, m_i):
    """Store the normalised output rows ``acc / l_i`` and their natural-log LSE, from the base-2 running
    maximum ``m_i`` and sum ``l_i`` of the merged softmax."""
    store_rows(o_base, rows, stride_n, offs_d, row_ok, d_ok, acc / l_i[:, None])
    tl.store(lse_base + rows, (m_i + tl.log2(l_i)) * LN2, mask=row_ok)
