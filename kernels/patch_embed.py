"""Fused patch embedding (Triton): raw ECG samples -> visible tokens in one pass.

Forward: one program per BLOCK_T output tokens of one sample. Token n = l·T_vis + j (lead-major) reads
its patch x[b, l, s·P : s·P + P] (s = the j-th visible slot), multiplies by Wᵀ, adds the bias and the
position row pos[lead_id[l]·T_all + s], and writes the token: each visible patch is read once, nothing
else is materialized.

Backward (dx): dpatch = dY · W for each visible token, written straight to its place in dx (hidden slots
stay zero). dW and db are reductions over every token: a GEMM, left to the BLAS (see the op's launcher).

Layout: x (B, L, S) with unit stride along samples; W (D, P); pos (rows, D); out (B, L·T_vis, D)
contiguous; vis (1 or B, T_vis) int32 slot ids ascending; lead_ids (L,) int32.
"""
import triton
import triton.language as tl


@triton.jit
def _visible_tokens(VIS, svisb, T_VIS, N_TOK, BLOCK_T: tl.constexpr):
    """Grid axis 1 is the sample, axis 0 a block of BLOCK_T output tokens. Returns the sample, the token
    ids (lead-major), their in-bounds mask, each token's input channel and its time slot."""
    b = tl.program_id(1)
    tok = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    tok_ok = tok < N_TOK
    slot = tl.load(VIS + b * svisb + tok % T_VIS, mask=tok_ok, other=0)
    return b, tok, tok_ok, tok // T_VIS, slot


@triton.jit
def store_tokens(OUT, b, sob, tok, son, offs_d, mask, acc):
    """Write a (BLOCK_T, BLOCK_D) tile of token rows: the kernel's wide side (D-wide rows, 16-byte aligned)."""
    tl.store(OUT + b * sob + tok[:, None] * son + offs_d[None, :], acc.to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def load_tokens(DY, b, sdyb, tok, sdyn, offs_d, mask):
    """Read a (BLOCK_T, BLOCK_D) tile of token-gradient rows: dx's wide side."""
    return tl.load(DY + b * sdyb + tok[:, None] * sdyn + offs_d[None, :], mask=mask, other=0.0)


@triton.jit
def patch_embed_fwd_kernel(
    X, W, BIAS, POS, VIS, LEAD_IDS, OUT,
    sxb, sxl, swd, sposr, svisb, sob, son,
    T_VIS, T_ALL, N_TOK, D, P,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    b, tok, tok_ok, lead, slot = _visible_tokens(VIS, svisb, T_VIS, N_TOK, BLOCK_T)
    lead_id = tl.load(LEAD_IDS + lead, mask=tok_ok, other=0)
    offs_p = tl.arange(0, BLOCK_P)
    p_ok = offs_p < P
    patch = tl.load(X + b * sxb + lead[:, None] * sxl + (slot * P)[:, None] + offs_p[None, :],
                    mask=tok_ok[:, None] & p_ok[None, :], other=0.0)
    if UPCAST:
        patch = patch.to(tl.float32)
    pos_row = lead_id * T_ALL + slot
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        d_ok = offs_d < D
        w = tl.load(W + offs_d[:, None] * swd + offs_p[None, :], mask=d_ok[:, None] & p_ok[None, :], other=0.0)
        if UPCAST:
            w = w.to(tl.float32)
        acc = tl.dot(patch, tl.trans(w), input_precision=DOT_PRECISION)
        acc += tl.load(BIAS + offs_d, mask=d_ok, other=0.0).to(tl.float32)[None, :]
        tile = tok_ok[:, None] & d_ok[None, :]
        acc += tl.load(POS + pos_row[:, None] * sposr + offs_d[None, :], mask=tile, other=0.0).to(tl.float32)
        store_tokens(OUT, b, sob, tok, son, offs_d, tile, acc)


@triton.jit
def patch_embed_dx_kernel(
    DY, W, VIS, DX,
    sdyb, sdyn, swd, svisb, sdxb, sdxl,
    T_VIS, N_TOK, D, P,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    b, tok, tok_ok, lead, slot = _visible_tokens(VIS, svisb, T_VIS, N_TOK, BLOCK_T)
    offs_p = tl.arange(0, BLOCK_P)
    p_ok = offs_p < P
    acc = tl.zeros([BLOCK_T, BLOCK_P], tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        d_ok = offs_d < D
        dy = load_tokens(DY, b, sdyb, tok, sdyn, offs_d, tok_ok[:, None] & d_ok[None, :])
        w = tl.load(W + offs_d[:, None] * swd + offs_p[None, :], mask=d_ok[:, None] & p_ok[None, :], other=0.0)
        if UPCAST:
            dy = dy.to(tl.float32)
            w = w.to(tl.float32)
        acc += tl.dot(dy, w, input_precision=DOT_PRECISION)
    tl.store(DX + b * sdxb + lead[:, None] * sdxl + (slot * P)[:, None] + offs_p[None, :],
             acc.to(DX.dtype.element_ty), mask=tok_ok[:, None] & p_ok[None, :])
