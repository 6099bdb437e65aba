"""Fused CroPA attention forward, column part gathered (Triton): a tuning choice beside ``cropa_fwd``.

The same function as :mod:`.cropa_fwd` (one softmax over a query's row and column keys, merged LSE),
arranged so that a program waits for few memory round trips: ``cropa_fwd`` walks the column part lead by
lead, one dependent load per other lead, and the H100 measured that chain as its cost.

One program owns (batch, head, lead, block of BLOCK_T query slots). Every load it needs is independent of
every other, so all are in flight together:

- the query rows (BLOCK_T, d);
- the column keys and values of every lead at the block's slots, gathered as one (LANES·BLOCK_T, d) tile
  each (row ``m·BLOCK_T + t'`` holds lead m's slot t'; rows of the own lead and of leads ≥ L masked);
- the own lead's key and value rows, BLOCK_K at a time (the row part; the first block is issued with the
  rest, and it is the only one when T ≤ BLOCK_K).

The column scores come from one tensor-core product q·K_colᵀ (BLOCK_T x LANES·BLOCK_T), of which entry
(t, m·BLOCK_T + t) is the score of key (m, t); the column values from one product P_col·V_col with P_col
holding query t's probability for lead m at column m·BLOCK_T + t and zeros elsewhere. Most of both products
is thrown away (a fraction 1/BLOCK_T is used); at BLOCK_T = 16 that costs about as much tensor-core time as
the row part, for one round trip instead of 2(L - 1).

Outputs and units as ``cropa_fwd``: O (B, H, N, d) in the input dtype, LSE (B, H, N) fp32 natural log;
scores in base 2 (``qk_scale = scale·log2(e)``).
"""
import triton
import triton.language as tl

from .cropa_common import finish_rows, load_rows, row_block


@triton.jit(do_not_specialize=["L", "T"])
def cropa_fwd_gather_kernel(
    Q, K, V, O, LSE,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
    H, L, T, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    LANES: tl.constexpr, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    blocks = tl.cdiv(T, BLOCK_T)
    pid = tl.program_id(0)
    bh = pid // (L * blocks)
    lead = (pid // blocks) % L
    slot0 = (pid % blocks) * BLOCK_T
    b = bh // H
    h = bh % H
    q_base = Q + b * sqb + h * sqh
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    o_base = O + b * sob + h * soh
    offs_t = tl.arange(0, BLOCK_T)
    offs_k = tl.arange(0, BLOCK_K)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    slots = slot0 + offs_t
    t_ok = slots < T

    # Column rows, gathered: row m·BLOCK_T + t' of the tile is lead m's slot slot0 + t'.
    col = tl.arange(0, LANES * BLOCK_T)
    col_lead = col // BLOCK_T
    col_slot = slot0 + col % BLOCK_T
    col_ok = (col_lead < L) & (col_lead != lead) & (col_slot < T)
    q = load_rows(q_base, lead * T + slots, sqn, offs_d, t_ok, d_ok, UPCAST)
    k_col = load_rows(k_base, col_lead * T + col_slot, skn, offs_d, col_ok, d_ok, UPCAST)
    v_col = load_rows(v_base, col_lead * T + col_slot, svn, offs_d, col_ok, d_ok, UPCAST)
    k_ok = offs_k < T  # the row part's first key block, issued with the rest
    k = load_rows(k_base, lead * T + offs_k, skn, offs_d, k_ok, d_ok, UPCAST)
    v = load_rows(v_base, lead * T + offs_k, svn, offs_d, k_ok, d_ok, UPCAST)

    # Column scores: entry (t, m·BLOCK_T + t) of q·K_colᵀ, kept where it is a real key.
    s_all = tl.dot(q, tl.trans(k_col), input_precision=DOT_PRECISION) * qk_scale  # (BLOCK_T, LANES·BLOCK_T)
    mine = (col[None, :] % BLOCK_T == offs_t[:, None]) & col_ok[None, :]
    s_all = tl.where(mine, s_all, float("-inf"))
    m_i = tl.max(s_all, 1)  # -inf with one lead
    l_i = tl.zeros([BLOCK_T], tl.float32)
    acc = tl.zeros([BLOCK_T, BLOCK_D], tl.float32)

    # Row part: the lead's keys, BLOCK_K at a time (key slot 0 is in the first block, so m_i is finite
    # after it for every row).
    for s0 in range(0, T, BLOCK_K):
        keys = s0 + offs_k
        s_ok = keys < T
        if s0 > 0:  # the first block was loaded above
            k = load_rows(k_base, lead * T + keys, skn, offs_d, s_ok, d_ok, UPCAST)
            v = load_rows(v_base, lead * T + keys, svn, offs_d, s_ok, d_ok, UPCAST)
        m_i, l_i, acc = row_block(q, k, v, s_ok, m_i, l_i, acc, qk_scale, DOT_PRECISION)

    # Column part under the final maximum: P_col is zero off the kept entries.
    p_col = tl.exp2(s_all - m_i[:, None])
    l_i += tl.sum(p_col, 1)
    acc += tl.dot(p_col.to(v_col.dtype), v_col, input_precision=DOT_PRECISION)

    finish_rows(o_base, LSE + bh * L * T, lead * T + slots, son, offs_d, t_ok, d_ok, acc, l_i, m_i)
