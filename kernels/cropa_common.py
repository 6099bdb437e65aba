"""Pieces shared by the CroPA attention kernels."""
import triton
import triton.language as tl


@triton.jit
def lead_tile(H, L, T, D, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    """Coordinates of this program: grid axis 1 is (batch, head, lead), axis 0 a block of BLOCK slots.

    Returns lead, bh (= batch·H + head), batch, head, the slot offsets (BLOCK,), the feature offsets
    (BLOCK_D,), and their in-bounds masks.
    """
    pid_bhl = tl.program_id(1)
    lead = pid_bhl % L
    bh = pid_bhl // L
    offs_t = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    return lead, bh, bh // H, bh % H, offs_t, offs_d, offs_t < T, offs_d < D


@triton.jit
def load_tile(base, rows, stride_n, offs_d, row_ok, d_ok, UPCAST: tl.constexpr):
    """The (len(rows), BLOCK_D) tile of a row-major (N, d) matrix at ``base`` (zero outside the masks),
    upcast to fp32 under ``UPCAST``."""
    x = tl.load(base + rows[:, None] * stride_n + offs_d[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    if UPCAST:
        x = x.to(tl.float32)
    return x
