"""Fused CroPA attention forward (Triton).

One program handles BLOCK_M query slots of one (batch, head, lead). Each query (l, t) sees the T keys
of its own lead (the "row" part, a FlashAttention inner loop over key blocks with ``tl.dot``) and the
L - 1 keys (m, t), m != l, of its own slot (the "column" part: one key per query row, so an elementwise
product and a row sum per lead m). Both parts share one online softmax; the (N, N) score matrix is never
formed. Output: O (B, H, N, d) and the merged natural-log LSE (B, H, N) fp32 for the backward.

Layout: every tensor is (B, H, N, d) with unit stride along d and N = L·T lead-major. The kernel works in
base 2: the host passes ``qk_scale = scale·log2(e)``.
"""
import triton
import triton.language as tl

from .cropa_common import lead_tile, load_tile


@triton.jit
def cropa_fwd_kernel(
    Q, K, V, O, LSE,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
    H, L, T, D, qk_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    lead, bh, b, h, offs_t, offs_d, t_ok, d_ok = lead_tile(H, L, T, D, BLOCK_M, BLOCK_D)
    q_base = Q + b * sqb + h * sqh
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh

    q = load_tile(q_base, lead * T + offs_t, sqn, offs_d, t_ok, d_ok, UPCAST)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running max, log2 units
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    # Row part first: key slot 0 is in the first block, so m_i is finite afterwards for every row.
    for start in range(0, T, BLOCK_N):
        offs_s = start + tl.arange(0, BLOCK_N)
        s_ok = offs_s < T
        k = load_tile(k_base, lead * T + offs_s, skn, offs_d, s_ok, d_ok, UPCAST)
        v = load_tile(v_base, lead * T + offs_s, svn, offs_d, s_ok, d_ok, UPCAST)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        s = tl.where(s_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    # Column part: key (m, t) for every other lead m.
    qf = q.to(tl.float32)
    tile_mask = t_ok[:, None] & d_ok[None, :]
    for m in range(0, L):
        kc = load_tile(k_base, m * T + offs_t, skn, offs_d, t_ok, d_ok, True)
        vc = load_tile(v_base, m * T + offs_t, svn, offs_d, t_ok, d_ok, True)
        s = tl.sum(qf * kc, 1) * qk_scale
        s = tl.where(t_ok & (m != lead), s, float("-inf"))
        m_new = tl.maximum(m_i, s)
        p = tl.exp2(s - m_new)
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + p
        acc = acc * alpha[:, None] + p[:, None] * vc
        m_i = m_new

    out = acc / l_i[:, None]
    o_ptrs = O + b * sob + h * soh + (lead * T + offs_t)[:, None] * son + offs_d[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=tile_mask)
    lse = (m_i + tl.log2(l_i)) * 0.6931471805599453  # back to natural log
    tl.store(LSE + bh * L * T + lead * T + offs_t, lse, mask=t_ok)
