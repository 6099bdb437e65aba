"""Fused CroPA attention forward (Triton).

A query (l, t) sees the T keys of its own lead (the "row" part) and the L - 1 keys (m, t), m != l, of
its own slot (the "column" part), under one softmax; the (N, N) score matrix never exists.

One program owns a (batch, head) and LEADS_PER_PROGRAM of its leads (one by default: on an H100 more
programs in flight beat keeping a (batch, head)'s K and V in one program's L1; the other programs find
them in L2). For each of its leads and each block of BLOCK_T query slots:

1. column scores first: for every other lead m, the row-wise dot of the query tile with lead m's key
   rows at the same slots (fp32 on the CUDA cores), collected in a (BLOCK_T, LANES) tile;
2. the row part, FlashAttention-style over blocks of key slots (``tl.dot``: tensor cores), with the
   running maximum started at the column scores' maximum, so no tile is ever rescaled for the column;
3. the column probabilities under the final maximum, and their values: one fp32 multiply-add of lead
   m's value rows per other lead.

Outputs: O (B, H, N, d) in the input dtype and the merged natural-log LSE (B, H, N) fp32 for the
backward. The kernel works in base 2: the host passes ``qk_scale = scale·log2(e)``.
"""
import triton
import triton.language as tl

from .cropa_common import finish_rows, load_rows, pick, row_block


@triton.jit(do_not_specialize=["L", "T"])
def cropa_fwd_kernel(
    Q, K, V, O, LSE,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
    H, L, T, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, LANES: tl.constexpr,
    LEADS_PER_PROGRAM: tl.constexpr, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    groups = tl.cdiv(L, LEADS_PER_PROGRAM)
    bh = tl.program_id(0) // groups
    first = (tl.program_id(0) % groups) * LEADS_PER_PROGRAM
    b = bh // H
    h = bh % H
    q_base = Q + b * sqb + h * sqh
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    o_base = O + b * sob + h * soh
    offs_t = tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    lanes = tl.arange(0, LANES)

    blocks = tl.cdiv(T, BLOCK_T)
    for item in range(0, (tl.minimum(first + LEADS_PER_PROGRAM, L) - first) * blocks):  # (lead, slot block)
        lead = first + item // blocks
        slots = (item % blocks) * BLOCK_T + offs_t
        t_ok = slots < T
        q = load_rows(q_base, lead * T + slots, sqn, offs_d, t_ok, d_ok, UPCAST)
        qf = q.to(tl.float32)

        # 1. Column scores: key (m, t) for every other lead m (m = lead + j mod L, j = 1..L-1).
        s_col = tl.full([BLOCK_T, LANES], float("-inf"), tl.float32)
        for j in range(1, L):
            m = (lead + j) % L
            k_m = load_rows(k_base, m * T + slots, skn, offs_d, t_ok, d_ok, True)
            s = tl.sum(qf * k_m, 1) * qk_scale
            s_col = tl.where(lanes[None, :] == m, s[:, None], s_col)
        m_i = tl.max(s_col, 1)  # -inf with one lead
        l_i = tl.zeros([BLOCK_T], tl.float32)
        acc = tl.zeros([BLOCK_T, BLOCK_D], tl.float32)

        # 2. Row part: the lead's keys, block by block. Key slot 0 is in the first block, so m_i is
        # finite after it for every row.
        for s0 in range(0, T, BLOCK_T):
            keys = s0 + offs_t
            s_ok = keys < T
            k = load_rows(k_base, lead * T + keys, skn, offs_d, s_ok, d_ok, UPCAST)
            v = load_rows(v_base, lead * T + keys, svn, offs_d, s_ok, d_ok, UPCAST)
            m_i, l_i, acc = row_block(q, k, v, s_ok, m_i, l_i, acc, qk_scale, DOT_PRECISION)

        # 3. Column part under the final maximum.
        p_col = tl.exp2(s_col - m_i[:, None])
        l_i += tl.sum(p_col, 1)
        for j in range(1, L):
            m = (lead + j) % L
            v_m = load_rows(v_base, m * T + slots, svn, offs_d, t_ok, d_ok, True)
            acc += pick(p_col, lanes, m)[:, None] * v_m

        finish_rows(o_base, LSE + bh * L * T, lead * T + slots, son, offs_d, t_ok, d_ok, acc, l_i, m_i)
