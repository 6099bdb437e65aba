"""Fused CroPA attention backward (Triton): dq, dk and dv in one kernel, no atomics.

With the forward's merged statistics, P = exp(S - LSE) and Delta = rowsum(dO ∘ O) hold for every key a
query sees, row part or column part alike, so dS = P ∘ (dP - Delta) with dP = dO·Vᵀ, and
dq = scale·dS·K, dk = scale·dSᵀ·Q, dv = Pᵀ·dO (FlashAttention's backward, per part).

One program owns a (batch, head):

1. Delta of all its tokens (fp32, read from O and dO once), into a small scratch buffer, then a barrier;
2. for each lead and each block of BLOCK_T slots:
   - dq of the block's queries: the row part against the lead's key blocks (``tl.dot``), then the column
     part, key (m, t) of every other lead m (fp32 row-wise dots and multiply-adds);
   - dk and dv of the block's keys: the row part against the lead's query blocks, then the column part,
     query (m, t) of every other lead m.

Every gradient row is written once, by the program that owns it. Layout as the forward's; LSE and Delta
(B, H, N) fp32 contiguous. Scores in base 2: ``qk_scale = scale·log2(e)``, LSE converted on load.
"""
import triton
import triton.language as tl

from .cropa_common import LOG2E, load_rows, store_rows


@triton.jit(do_not_specialize=["L", "T"])
def cropa_bwd_kernel(
    Q, K, V, O, DO, LSE, DELTA, DQ, DK, DV,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son, sdob, sdoh, sdon,
    sdqb, sdqh, sdqn, sdkb, sdkh, sdkn, sdvb, sdvh, sdvn,
    H, L, T, sm_scale, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    q_base = Q + b * sqb + h * sqh
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    do_base = DO + b * sdob + h * sdoh
    dq_base = DQ + b * sdqb + h * sdqh
    dk_base = DK + b * sdkb + h * sdkh
    dv_base = DV + b * sdvb + h * sdvh
    lse_base = LSE + bh * L * T
    delta_base = DELTA + bh * L * T
    offs_t = tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM

    # 1. Delta = rowsum(dO ∘ O) for every token of the (batch, head).
    o_base = O + b * sob + h * soh
    for r0 in range(0, L * T, BLOCK_T):
        rows = r0 + offs_t
        ok = rows < L * T
        do = load_rows(do_base, rows, sdon, offs_d, ok, d_ok, True)
        o = load_rows(o_base, rows, son, offs_d, ok, d_ok, True)
        tl.store(delta_base + rows, tl.sum(do * o, 1), mask=ok)
    tl.debug_barrier()  # every thread's Delta is written before any thread reads another's

    blocks = tl.cdiv(T, BLOCK_T)
    for item in range(0, L * blocks):  # (lead, slot block)
        lead = item // blocks
        slots = (item % blocks) * BLOCK_T + offs_t
        t_ok = slots < T
        rows = lead * T + slots

        # 2a. dq of the queries (lead, slots).
        q = load_rows(q_base, rows, sqn, offs_d, t_ok, d_ok, UPCAST)
        do = load_rows(do_base, rows, sdon, offs_d, t_ok, d_ok, UPCAST)
        lse = tl.load(lse_base + rows, mask=t_ok, other=0.0) * LOG2E
        delta = tl.load(delta_base + rows, mask=t_ok, other=0.0)
        dq = tl.zeros([BLOCK_T, BLOCK_D], tl.float32)
        for i0 in range(0, T, BLOCK_T):
            keys = i0 + offs_t
            k_ok = keys < T
            k = load_rows(k_base, lead * T + keys, skn, offs_d, k_ok, d_ok, UPCAST)
            v = load_rows(v_base, lead * T + keys, svn, offs_d, k_ok, d_ok, UPCAST)
            s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
            p = tl.where(t_ok[:, None] & k_ok[None, :], tl.exp2(s - lse[:, None]), 0.0)
            dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)
        qf = q.to(tl.float32)
        dof = do.to(tl.float32)
        for j in range(1, L):
            m = (lead + j) % L
            k_m = load_rows(k_base, m * T + slots, skn, offs_d, t_ok, d_ok, True)
            v_m = load_rows(v_base, m * T + slots, svn, offs_d, t_ok, d_ok, True)
            p = tl.where(t_ok, tl.exp2(tl.sum(qf * k_m, 1) * qk_scale - lse), 0.0)
            ds = p * (tl.sum(dof * v_m, 1) - delta)
            dq += ds[:, None] * k_m
        store_rows(dq_base, rows, sdqn, offs_d, t_ok, d_ok, dq * sm_scale)

        # 2b. dk and dv of the keys (lead, slots).
        k = load_rows(k_base, rows, skn, offs_d, t_ok, d_ok, UPCAST)
        v = load_rows(v_base, rows, svn, offs_d, t_ok, d_ok, UPCAST)
        dk = tl.zeros([BLOCK_T, BLOCK_D], tl.float32)
        dv = tl.zeros([BLOCK_T, BLOCK_D], tl.float32)
        for i0 in range(0, T, BLOCK_T):
            queries = i0 + offs_t
            q_ok = queries < T
            q_i = load_rows(q_base, lead * T + queries, sqn, offs_d, q_ok, d_ok, UPCAST)
            do_i = load_rows(do_base, lead * T + queries, sdon, offs_d, q_ok, d_ok, UPCAST)
            lse_i = tl.load(lse_base + lead * T + queries, mask=q_ok, other=0.0) * LOG2E
            delta_i = tl.load(delta_base + lead * T + queries, mask=q_ok, other=0.0)
            st = tl.dot(k, tl.trans(q_i), input_precision=DOT_PRECISION) * qk_scale  # keys x queries
            pt = tl.where(t_ok[:, None] & q_ok[None, :], tl.exp2(st - lse_i[None, :]), 0.0)
            dv += tl.dot(pt.to(do_i.dtype), do_i, input_precision=DOT_PRECISION)
            dpt = tl.dot(v, tl.trans(do_i), input_precision=DOT_PRECISION)
            dst = pt * (dpt - delta_i[None, :])
            dk += tl.dot(dst.to(q_i.dtype), q_i, input_precision=DOT_PRECISION)
        kf = k.to(tl.float32)
        vf = v.to(tl.float32)
        for j in range(1, L):
            m = (lead + j) % L
            q_m = load_rows(q_base, m * T + slots, sqn, offs_d, t_ok, d_ok, True)
            do_m = load_rows(do_base, m * T + slots, sdon, offs_d, t_ok, d_ok, True)
            lse_m = tl.load(lse_base + m * T + slots, mask=t_ok, other=0.0) * LOG2E
            delta_m = tl.load(delta_base + m * T + slots, mask=t_ok, other=0.0)
            p = tl.where(t_ok, tl.exp2(tl.sum(q_m * kf, 1) * qk_scale - lse_m), 0.0)
            dv += p[:, None] * do_m
            ds = p * (tl.sum(do_m * vf, 1) - delta_m)
            dk += ds[:, None] * q_m
        store_rows(dk_base, rows, sdkn, offs_d, t_ok, d_ok, dk * sm_scale)
        store_rows(dv_base, rows, sdvn, offs_d, t_ok, d_ok, dv)
