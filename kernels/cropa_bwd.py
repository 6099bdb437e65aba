"""Fused CroPA attention backward (Triton).

FlashAttention-style, per branch, with the merged statistics of the forward: P = exp(S - LSE) with the
joint LSE, and Delta = rowsum(dO ∘ O) of the merged output, so dS = P ∘ (dP - Delta) in both the row
(same-lead) and column (same-slot) parts. Two kernels, no atomics:

- ``cropa_bwd_dq_kernel``: one program per BLOCK_M query slots of a (batch, head, lead): dQ.
- ``cropa_bwd_dkdv_kernel``: one program per BLOCK_N key slots of a (batch, head, lead): dK and dV,
  from the queries of its own lead (row part) and of the same slots in every other lead (column part).

Layout: (B, H, N, d) tensors with unit stride along d; LSE and Delta are (B, H, N) fp32, contiguous.
"""
import triton
import triton.language as tl

from .cropa_common import lead_tile, load_tile


@triton.jit
def cropa_bwd_dq_kernel(
    Q, K, V, DO, DQ, LSE, DELTA,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdob, sdoh, sdon, sdqb, sdqh, sdqn,
    H, L, T, D, scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    lead, bh, b, h, offs_t, offs_d, t_ok, d_ok = lead_tile(H, L, T, D, BLOCK_M, BLOCK_D)
    tile_mask = t_ok[:, None] & d_ok[None, :]
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    rows = (lead * T + offs_t)[:, None]

    q = load_tile(Q + b * sqb + h * sqh, lead * T + offs_t, sqn, offs_d, t_ok, d_ok, UPCAST)
    do = load_tile(DO + b * sdob + h * sdoh, lead * T + offs_t, sdon, offs_d, t_ok, d_ok, UPCAST)
    stat_off = bh * L * T + lead * T + offs_t
    lse = tl.load(LSE + stat_off, mask=t_ok, other=0.0)
    delta = tl.load(DELTA + stat_off, mask=t_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    for start in range(0, T, BLOCK_N):
        offs_s = start + tl.arange(0, BLOCK_N)
        s_ok = offs_s < T
        k = load_tile(k_base, lead * T + offs_s, skn, offs_d, s_ok, d_ok, UPCAST)
        v = load_tile(v_base, lead * T + offs_s, svn, offs_d, s_ok, d_ok, UPCAST)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale
        p = tl.where(s_ok[None, :], tl.exp(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)

    qf = q.to(tl.float32)
    dof = do.to(tl.float32)
    for m in range(0, L):
        kc = load_tile(k_base, m * T + offs_t, skn, offs_d, t_ok, d_ok, True)
        vc = load_tile(v_base, m * T + offs_t, svn, offs_d, t_ok, d_ok, True)
        s = tl.sum(qf * kc, 1) * scale
        p = tl.where(t_ok & (m != lead), tl.exp(s - lse), 0.0)
        ds = p * (tl.sum(dof * vc, 1) - delta)
        dq += ds[:, None] * kc

    dq = dq * scale
    tl.store(DQ + b * sdqb + h * sdqh + rows * sdqn + offs_d[None, :], dq.to(DQ.dtype.element_ty), mask=tile_mask)


@triton.jit
def cropa_bwd_dkdv_kernel(
    Q, K, V, DO, DK, DV, LSE, DELTA,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdob, sdoh, sdon, sdkb, sdkh, sdkn, sdvb, sdvh, sdvn,
    H, L, T, D, scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    lead, bh, b, h, offs_s, offs_d, s_ok, d_ok = lead_tile(H, L, T, D, BLOCK_N, BLOCK_D)
    tile_mask = s_ok[:, None] & d_ok[None, :]
    q_base = Q + b * sqb + h * sqh
    do_base = DO + b * sdob + h * sdoh
    stat_base = bh * L * T
    rows = (lead * T + offs_s)[:, None]

    k = load_tile(K + b * skb + h * skh, lead * T + offs_s, skn, offs_d, s_ok, d_ok, UPCAST)
    v = load_tile(V + b * svb + h * svh, lead * T + offs_s, svn, offs_d, s_ok, d_ok, UPCAST)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)

    # Row part: queries of the same lead, all slots; work with transposed scores (keys x queries).
    for start in range(0, T, BLOCK_M):
        offs_t = start + tl.arange(0, BLOCK_M)
        t_ok = offs_t < T
        q = load_tile(q_base, lead * T + offs_t, sqn, offs_d, t_ok, d_ok, UPCAST)
        do = load_tile(do_base, lead * T + offs_t, sdon, offs_d, t_ok, d_ok, UPCAST)
        lse = tl.load(LSE + stat_base + lead * T + offs_t, mask=t_ok, other=0.0)
        delta = tl.load(DELTA + stat_base + lead * T + offs_t, mask=t_ok, other=0.0)
        st = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * scale
        pt = tl.where(s_ok[:, None] & t_ok[None, :], tl.exp(st - lse[None, :]), 0.0)
        dv += tl.dot(pt.to(do.dtype), do, input_precision=DOT_PRECISION)
        dpt = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
        dst = pt * (dpt - delta[None, :])
        dk += tl.dot(dst.to(q.dtype), q, input_precision=DOT_PRECISION)

    # Column part: query (l, s) for every other lead l, one per key row.
    kf = k.to(tl.float32)
    vf = v.to(tl.float32)
    for l in range(0, L):
        qc = load_tile(q_base, l * T + offs_s, sqn, offs_d, s_ok, d_ok, True)
        doc = load_tile(do_base, l * T + offs_s, sdon, offs_d, s_ok, d_ok, True)
        lse = tl.load(LSE + stat_base + l * T + offs_s, mask=s_ok, other=0.0)
        delta = tl.load(DELTA + stat_base + l * T + offs_s, mask=s_ok, other=0.0)
        s = tl.sum(qc * kf, 1) * scale
        p = tl.where(s_ok & (l != lead), tl.exp(s - lse), 0.0)
        dv += p[:, None] * doc
        ds = p * (tl.sum(doc * vf, 1) - delta)
        dk += ds[:, None] * qc

    dk = dk * scale
    tl.store(DK + b * sdkb + h * sdkh + rows * sdkn + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=tile_mask)
    tl.store(DV + b * sdvb + h * sdvh + rows * sdvn + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=tile_mask)
