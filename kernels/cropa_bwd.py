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


@triton.jit
def cropa_bwd_dq_kernel(
    Q, K, V, DO, DQ, LSE, DELTA,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdob, sdoh, sdon, sdqb, sdqh, sdqn,
    H, L, T, D, scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bhl = tl.program_id(1)
    lead = pid_bhl % L
    bh = pid_bhl // L
    b = bh // H
    h = bh % H

    offs_t = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    t_ok = offs_t < T
    d_ok = offs_d < D
    tile_mask = t_ok[:, None] & d_ok[None, :]
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    rows = (lead * T + offs_t)[:, None]

    q = tl.load(Q + b * sqb + h * sqh + rows * sqn + offs_d[None, :], mask=tile_mask, other=0.0)
    do = tl.load(DO + b * sdob + h * sdoh + rows * sdon + offs_d[None, :], mask=tile_mask, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
        do = do.to(tl.float32)
    stat_off = bh * L * T + lead * T + offs_t
    lse = tl.load(LSE + stat_off, mask=t_ok, other=0.0)
    delta = tl.load(DELTA + stat_off, mask=t_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    for start in range(0, T, BLOCK_N):
        offs_s = start + tl.arange(0, BLOCK_N)
        s_ok = offs_s < T
        kv_mask = s_ok[:, None] & d_ok[None, :]
        k = tl.load(k_base + (lead * T + offs_s)[:, None] * skn + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_base + (lead * T + offs_s)[:, None] * svn + offs_d[None, :], mask=kv_mask, other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale
        p = tl.where(s_ok[None, :], tl.exp(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)

    qf = q.to(tl.float32)
    dof = do.to(tl.float32)
    for m in range(0, L):
        other = (m * T + offs_t)[:, None]
        kc = tl.load(k_base + other * skn + offs_d[None, :], mask=tile_mask, other=0.0).to(tl.float32)
        vc = tl.load(v_base + other * svn + offs_d[None, :], mask=tile_mask, other=0.0).to(tl.float32)
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
    pid_n = tl.program_id(0)
    pid_bhl = tl.program_id(1)
    lead = pid_bhl % L
    bh = pid_bhl // L
    b = bh // H
    h = bh % H

    offs_s = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    s_ok = offs_s < T
    d_ok = offs_d < D
    tile_mask = s_ok[:, None] & d_ok[None, :]
    q_base = Q + b * sqb + h * sqh
    do_base = DO + b * sdob + h * sdoh
    stat_base = bh * L * T
    rows = (lead * T + offs_s)[:, None]

    k = tl.load(K + b * skb + h * skh + rows * skn + offs_d[None, :], mask=tile_mask, other=0.0)
    v = tl.load(V + b * svb + h * svh + rows * svn + offs_d[None, :], mask=tile_mask, other=0.0)
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)

    # Row part: queries of the same lead, all slots; work with transposed scores (keys x queries).
    for start in range(0, T, BLOCK_M):
        offs_t = start + tl.arange(0, BLOCK_M)
        t_ok = offs_t < T
        q_mask = t_ok[:, None] & d_ok[None, :]
        q = tl.load(q_base + (lead * T + offs_t)[:, None] * sqn + offs_d[None, :], mask=q_mask, other=0.0)
        do = tl.load(do_base + (lead * T + offs_t)[:, None] * sdon + offs_d[None, :], mask=q_mask, other=0.0)
        if UPCAST:
            q = q.to(tl.float32)
            do = do.to(tl.float32)
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
        other = (l * T + offs_s)[:, None]
        qc = tl.load(q_base + other * sqn + offs_d[None, :], mask=tile_mask, other=0.0).to(tl.float32)
        doc = tl.load(do_base + other * sdon + offs_d[None, :], mask=tile_mask, other=0.0).to(tl.float32)
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
