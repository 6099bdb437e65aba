// CroPA attention, forward and backward. A query (l, t) sees the T keys of its own lead (the row part) and
// the L - 1 keys (m, t), m != l, of its own slot (the column part) under one softmax.
//
// Both kernels are warp-level (warp.cuh): one CTA per batch·head stages two of the head's matrices in shared
// memory with cp.async, warps own 16-row blocks and keep scores, probabilities and accumulators in mma.sync
// fragments. Forward (fwd_cta): K and V staged, warps on query blocks, online softmax, O and LSE written
// once. Backward (bwd_cta): a dq phase (K, V staged; warps on query blocks) and a dk/dv phase (Q, dO
// staged; warps on key blocks), P recomputed from the forward's LSE, Delta = rowsum(dO∘O) computed in the
// CTA; every gradient row written once by its owner, no atomics.
#include "warp.cuh"

namespace ecg_jepa {
namespace {

constexpr float kNegInf = -INFINITY;


// ---------------------------------------------------------------------------------------------------
// The forward: one CTA of 8 warps per (batch·head), 16 where a CTA alone fills an SM's shared memory (and
// the registers allow: head dims up to 64). The head's keys and values (all L·T rows,
// head dim padded to kD16·16, rows kFwdPad elements apart so that ldmatrix's eight rows fall in distinct
// banks) are staged in shared memory once by 16-byte cp.async copies. A warp owns blocks of 16 queries of
// one lead (slots t0..t0+15), their Q fragments read from global memory into registers. Row pass: the
// lead's keys 16 at a time, S = Q·Kᵀ (mma, K by ldmatrix), online softmax in the accumulator registers,
// P converted in registers to an A fragment, O += P·V (V by ldmatrix.trans). Column pass: for each other
// lead m, the key (m, t0 + i) of query row i, gathered with one ldmatrix row address per query row (the
// time-major order read from the lead-major staging): the scores are the diagonal of Q times the gathered
// keys, and O += diag(p) times the gathered values, on the tensor cores too, under the same online softmax.
// The self key is the row pass's only. O and the natural-log LSE (the backward's inputs) are written once.
constexpr int kFwdWarps = 8, kFwdWarpsAlone = 16;
constexpr int kFwdPad = 8;      // elements of padding per staged row
constexpr int kColChunk = 4;    // column keys per online-softmax step
constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;

// Bytes of the forward CTA's shared memory: K and V of every token of the head.
ECG_HOST_DEVICE size_t fwd_smem_bytes(int leads, int slots, int head_dim, int ts) {
  return 2 * size_t(leads) * slots * (round_up(head_dim, kTile) + kFwdPad) * ts;
}

// Stages rows [0, n) of src (d elements each) as rows of sp elements at dst, zero from column d to dp.
template <typename T>
ECG_HD void stage_rows(int tid, int threads, T* dst, const T* src, int n, int d, int dp, int sp, bool vec) {
  if (vec) {
    const int chunks = dp / 8;
    for (int i = tid; i < n * chunks; i += threads) {
      const int r = i / chunks, col = (i % chunks) * 8;
      cp_async16(dst + r * sp + col, src + int64_t(r) * d + (col < d ? col : 0), col < d ? 16 : 0);
    }
  } else {
    for (int i = tid; i < n * dp; i += threads) {
      const int r = i / dp, col = i % dp;
      dst[r * sp + col] = col < d ? src[int64_t(r) * d + col] : from_float<T>(0.f);
    }
  }
}

// The 16-bit pair (row, col), (row, col + 1) of a (rows x d) matrix, zero outside it.
template <typename T>
ECG_HD uint32_t pair_at(const T* m, int row, int rows, int col, int d, bool vec) {
  if (row >= rows || col >= d) return 0u;
  if (vec) return *reinterpret_cast<const uint32_t*>(m + int64_t(row) * d + col);
  const float hi = col + 1 < d ? to_float(m[int64_t(row) * d + col + 1]) : 0.f;
  return pack2<T>(to_float(m[int64_t(row) * d + col]), hi);
}

// Online-softmax step for this lane's two rows (h = 0: row g, h = 1: row g + 8): row maximum `top` of the
// new scores (quad-wide), rescales the accumulators and the running sums by e^(old max - new max).
template <int kN>
ECG_HD float rescale(float (&acc)[kN][4], float& mx, float& sum, float top, int h) {
  const float next = mx > top ? mx : top;
  const float alpha = fast_exp2(mx - next);
  mx = next;
  sum *= alpha;
  for (int j = 0; j < kN; ++j) acc[j][2 * h] *= alpha, acc[j][2 * h + 1] *= alpha;
  return next;
}

ECG_HD float quad_max(float x) {
  x = fmaxf(x, shfl_xor(x, 1));
  return fmaxf(x, shfl_xor(x, 2));
}
ECG_HD float quad_sum(float x) {
  x += shfl_xor(x, 1);
  return x + shfl_xor(x, 2);
}

template <typename T, int kD16>
ECG_HD void fwd_cta(int tid, int warps, int64_t bh, char* smem, const T* q, const T* k, const T* v, T* o, float* lse, int leads,
                    int slots, int d, float scale_log2, bool vec) {
  constexpr int kDp = kD16 * kTile, kSp = kDp + kFwdPad, kN = 2 * kD16;  // kN: n-tiles of 8 output columns
  const int n = leads * slots;
  T* sk = reinterpret_cast<T*>(smem);
  T* sv = sk + int64_t(n) * kSp;
  q += bh * n * d, k += bh * n * d, v += bh * n * d, o += bh * n * d, lse += bh * n;
  stage_rows(tid, warps * 32, sk, k, n, d, kDp, kSp, vec);
  stage_rows(tid, warps * 32, sv, v, n, d, kDp, kSp, vec);
  cp_async_wait_all();
  cta_sync();

  const int lane = tid % 32, g = lane / 4, c = lane % 4;
  const int r16 = lane % 16, c8 = (lane / 16) * 8;  // a row and column this lane addresses in an ldmatrix.x4
  const int blocks = cdiv(slots, kTile);
  for (int qb = tid / 32; qb < leads * blocks; qb += warps) {
    const int lead = qb / blocks, t0 = (qb % blocks) * kTile;
    const T* qrows = q + int64_t(lead) * slots * d;
    uint32_t qa[kD16][4];
    for (int kk = 0; kk < kD16; ++kk)
      for (int i = 0; i < 4; ++i)
        qa[kk][i] = pair_at(qrows, t0 + g + (i % 2) * 8, slots, kk * kTile + 2 * c + (i / 2) * 8, d, vec);
    float acc[kN][4] = {};
    float mx[2] = {kNegInf, kNegInf}, sum[2] = {0.f, 0.f};

    // Row pass: the lead's T keys, 16 at a time (rows past T read the last key and are masked).
    const T *krows = sk + int64_t(lead) * slots * kSp, *vrows = sv + int64_t(lead) * slots * kSp;
    for (int kb = 0; kb < slots; kb += kTile) {
      float s[2][4] = {};
      const int key = kb + (lane % 8) + (lane / 16) * 8;  // B fragments: matrices (keys 0-7 | 8-15) x (k 0-7 | 8-15)
      const T* krow = krows + (key < slots ? key : slots - 1) * kSp + ((lane / 8) % 2) * 8;
      for (int kk = 0; kk < kD16; ++kk) {
        uint32_t b[4];
        ldmatrix_x4(b, krow + kk * kTile);
        mma_16816<T>(s[0], qa[kk], b[0], b[1]);
        mma_16816<T>(s[1], qa[kk], b[2], b[3]);
      }
      for (int h = 0; h < 2; ++h) {
        float top = kNegInf;
        for (int j = 0; j < 2; ++j)
          for (int e = 0; e < 2; ++e) {
            float& x = s[j][2 * h + e];
            x = kb + 8 * j + 2 * c + e < slots ? x * scale_log2 : kNegInf;
            top = fmaxf(top, x);
          }
        const float m = rescale(acc, mx[h], sum[h], quad_max(top), h);
        for (int j = 0; j < 2; ++j)
          for (int e = 0; e < 2; ++e) {
            float& x = s[j][2 * h + e];
            x = fast_exp2(x - m);
            sum[h] += x;
          }
      }
      const uint32_t pa[4] = {pack2<T>(s[0][0], s[0][1]), pack2<T>(s[0][2], s[0][3]), pack2<T>(s[1][0], s[1][1]),
                              pack2<T>(s[1][2], s[1][3])};
      const int vkey = kb + r16;
      const T* vrow = vrows + (vkey < slots ? vkey : slots - 1) * kSp + c8;
      for (int jj = 0; jj < kD16; ++jj) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, vrow + jj * kTile);
        mma_16816<T>(acc[2 * jj], pa, b[0], b[1]);
        mma_16816<T>(acc[2 * jj + 1], pa, b[2], b[3]);
      }
    }

    // Column pass: key (m, t0 + i) for query row i, every other lead m, kColChunk leads per step. The
    // gathered rows G_m[i] = K[(m, t0 + i)] (one ldmatrix row address per query row) make S = Q·G_mᵀ, whose
    // diagonal holds the scores; then O += diag(p)·V-gathered, both on the tensor cores.
    const int krow = t0 + (lane % 8) + (lane / 16) * 8, vrow = t0 + r16;  // gathered rows this lane addresses
    const int kslot = krow < slots ? krow : slots - 1, vslot = vrow < slots ? vrow : slots - 1;
    const int diag = (lane & ~3) | (g / 2);  // the lane holding S[g][g] (tile 0) and S[g+8][g+8] (tile 1)
    for (int m0 = 0; m0 < leads; m0 += kColChunk) {
      float sc[kColChunk][2];
      for (int u = 0; u < kColChunk; ++u) {
        const int m = m0 + u;
        sc[u][0] = sc[u][1] = kNegInf;
        if (m >= leads || m == lead) continue;  // uniform over the warp
        const T* kcol = sk + (int64_t(m) * slots + kslot) * kSp + ((lane / 8) % 2) * 8;
        float st[2][4] = {};
        for (int kk = 0; kk < kD16; ++kk) {
          uint32_t b[4];
          ldmatrix_x4(b, kcol + kk * kTile);
          mma_16816<T>(st[0], qa[kk], b[0], b[1]);
          mma_16816<T>(st[1], qa[kk], b[2], b[3]);
        }
        sc[u][0] = shfl_idx(g % 2 ? st[0][1] : st[0][0], diag) * scale_log2;
        sc[u][1] = shfl_idx(g % 2 ? st[1][3] : st[1][2], diag) * scale_log2;
      }
      float p[kColChunk][2];
      for (int h = 0; h < 2; ++h) {
        float top = kNegInf;
        for (int u = 0; u < kColChunk; ++u) top = fmaxf(top, sc[u][h]);
        const float m = rescale(acc, mx[h], sum[h], top, h);
        for (int u = 0; u < kColChunk; ++u) {
          p[u][h] = fast_exp2(sc[u][h] - m);
          if (c == 0) sum[h] += p[u][h];  // the quad's sum: counted once
        }
      }
      for (int u = 0; u < kColChunk; ++u) {
        const int m = m0 + u;
        if (m >= leads || m == lead) continue;
        // diag(p) as an A fragment: P[g][g] in a[0] and P[g+8][g+8] in a[3] of lane `diag`, zero elsewhere.
        const bool mine = lane == diag;
        const uint32_t pa[4] = {mine ? pack2<T>(g % 2 ? 0.f : p[u][0], g % 2 ? p[u][0] : 0.f) : 0u, 0u, 0u,
                                mine ? pack2<T>(g % 2 ? 0.f : p[u][1], g % 2 ? p[u][1] : 0.f) : 0u};
        const T* vcol = sv + (int64_t(m) * slots + vslot) * kSp + c8;
        for (int jj = 0; jj < kD16; ++jj) {
          uint32_t b[4];
          ldmatrix_x4_trans(b, vcol + jj * kTile);
          mma_16816<T>(acc[2 * jj], pa, b[0], b[1]);
          mma_16816<T>(acc[2 * jj + 1], pa, b[2], b[3]);
        }
      }
    }

    // Normalise; write O and the natural-log LSE of this lane's rows.
    for (int h = 0; h < 2; ++h) {
      const float total = quad_sum(sum[h]);
      const int t = t0 + g + 8 * h;
      if (t >= slots) continue;
      const int64_t row = int64_t(lead) * slots + t;
      const float inv = 1.f / total;
      for (int j = 0; j < kN; ++j) {
        const int col = 8 * j + 2 * c;
        const float x0 = acc[j][2 * h] * inv, x1 = acc[j][2 * h + 1] * inv;
        if (vec && col < d) {
          *reinterpret_cast<uint32_t*>(o + row * d + col) = pack2<T>(x0, x1);
        } else {
          if (col < d) o[row * d + col] = from_float<T>(x0);
          if (col + 1 < d) o[row * d + col + 1] = from_float<T>(x1);
        }
      }
      if (c == 0) lse[row] = (mx[h] + fast_log2(total)) * kLn2;
    }
  }
}

#ifndef ECG_JEPA_HOST_EMULATION
template <typename T, int kD16>
__global__ void __launch_bounds__(32 * (kD16 <= 4 ? kFwdWarpsAlone : kFwdWarps), 1)
cropa_fwd_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ o,
                 float* __restrict__ lse, int leads, int slots, int d, float scale_log2, bool vec) {
  extern __shared__ __align__(128) char smem[];
  fwd_cta<T, kD16>(threadIdx.x, blockDim.x / 32, blockIdx.x, smem, q, k, v, o, lse, leads, slots, d, scale_log2, vec);
}
#endif

// Runs the forward for head dims up to kD16·16 (kD16 = ceil(head_dim / 16)) with ``smem`` bytes of shared
// memory per CTA, on a device allowing ``limit``.
template <typename T, int kD16 = 1>
cudaError_t launch_fwd(int d16, const T* q, const T* k, const T* v, T* o, float* lse, int64_t bh, int leads, int slots,
                       int d, float scale_log2, bool vec, size_t smem, size_t limit, cudaStream_t stream) {
  if constexpr (kD16 < kMaxHeadDim / kTile) {
    if (d16 > kD16)
      return launch_fwd<T, kD16 + 1>(d16, q, k, v, o, lse, bh, leads, slots, d, scale_log2, vec, smem, limit, stream);
  }
  const int warps = kD16 <= 4 && 2 * smem > limit ? kFwdWarpsAlone : kFwdWarps;
#ifdef ECG_JEPA_HOST_EMULATION
  (void)stream;
  host::Cta cta;
  std::vector<uint4> buffer(smem / sizeof(uint4) + 1);
  char* base = reinterpret_cast<char*>(buffer.data());
  for (int64_t x = 0; x < bh; ++x)
    host::run_cta(cta, warps * 32, [&](int tid) {
      fwd_cta<T, kD16>(tid, warps, x, base, q, k, v, o, lse, leads, slots, d, scale_log2, vec);
    });
  return cudaSuccess;
#else
  cudaError_t err = cudaFuncSetAttribute(cropa_fwd_kernel<T, kD16>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (err != cudaSuccess) return err;
  cropa_fwd_kernel<T, kD16><<<unsigned(bh), warps * 32, smem, stream>>>(q, k, v, o, lse, leads, slots, d, scale_log2, vec);
  return cudaGetLastError();
#endif
}

// ---------------------------------------------------------------------------------------------------
// The backward (warp-level, like the forward): one CTA per (batch·head), in two phases over the same
// shared memory as the forward's (two staged copies of the head's L·T rows, kFwdPad apart) plus the head's
// LSE (natural log, from the forward; kept as log2 units) and Delta = rowsum(dO∘O) (computed here, by the
// CTA's threads from global memory, while the first staging is in flight).
//   Phase Q (dq): K and V staged; a warp owns 16 queries of one lead (Q and dO as A fragments, read from
//     global into registers) and recomputes, for the lead's T keys 16 at a time (row pass) and for the key
//     (m, t) of every other lead m (column pass, the forward's diagonal gather), S = Q·Kᵀ and dP = dO·Vᵀ,
//     P = exp2(S·scale·log2e − LSE·log2e), dS = P∘(dP − Delta), dQ += dS·K; dq written once by its owner.
//   Phase K (dk, dv): Q and dO staged in the same buffers; a warp owns 16 keys of one lead (K and V as A
//     fragments) and computes the transposed products Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ against the lead's queries
//     (row pass) and the query (m, s) of every other lead at its own slot (column pass, self query once:
//     in the row pass), with the LSE and Delta of the query (a column now); dV += Pᵀ·dO, dK += dSᵀ·Q;
//     dk, dv written once by their owner.
// No atomics and no shared-memory accumulation: every gradient row has one owning warp. The price is that
// S and dP are computed twice (once per phase). At L8 T50 d48 a (batch·head) has 400 queries x (50 row +
// 7 column) keys: S and dP are 2 x 400·64·48·2 = 4.9 MFLOP per phase on the row pass (keys padded to 64),
// about 10 MFLOP of recomputation per head (~15 µs over B64 H16 at ~700 TFLOP/s of dense mma, less than
// the 0.11 ms HBM floor of the backward); the alternative that computes them once must scatter either dq
// (fp32 atomics: 400 x 48 x 4 B per head per key block owner, through L2, 4.9 MB per (B64 H16) per key
// block of a lead) or dk/dv of the column pass (the keys (m, t) of a query block sit in other warps' rows)
// through shared memory (a 400 x 48 fp32 accumulator: 77 KB, which does not fit beside the staging at
// L12 T50). Two phases keep the shared memory of the forward, so the backward runs wherever the forward
// does (the same plan), with 8 warps (the key phase holds four operand fragments and two accumulators).
constexpr int kBwdWarps = 8;
constexpr int kSplitKeyPhase = 6;  // kD16 above which the key phase is two sweeps (see BwdSweep)

// Bytes of the backward CTA's shared memory: the forward's staging plus the head's LSE and Delta.
ECG_HOST_DEVICE size_t bwd_smem_bytes(int leads, int slots, int head_dim, int ts) {
  return fwd_smem_bytes(leads, slots, head_dim, ts) + 2 * size_t(leads) * slots * 4;
}

// The A fragments (16 rows x kD16·16 columns) of rows t0.. of a (slots x d) matrix, zero outside it.
template <typename T, int kD16>
ECG_HD void load_a(uint32_t (&a)[kD16][4], const T* rows, int t0, int slots, int d, bool vec, int g, int c) {
  for (int kk = 0; kk < kD16; ++kk)
    for (int i = 0; i < 4; ++i) a[kk][i] = pair_at(rows, t0 + g + (i % 2) * 8, slots, kk * kTile + 2 * c + (i / 2) * 8, d, vec);
}

// Writes this lane's part of acc·mul (rows t0 + g, t0 + g + 8 of a (slots x d) matrix at out).
template <typename T, int kN>
ECG_HD void store_c(T* out, const float (&acc)[kN][4], float mul, int t0, int slots, int d, bool vec, int g, int c) {
  for (int h = 0; h < 2; ++h) {
    const int t = t0 + g + 8 * h;
    if (t >= slots) continue;
    for (int j = 0; j < kN; ++j) {
      const int col = 8 * j + 2 * c;
      const float x0 = acc[j][2 * h] * mul, x1 = acc[j][2 * h + 1] * mul;
      if (vec && col < d) {
        *reinterpret_cast<uint32_t*>(out + int64_t(t) * d + col) = pack2<T>(x0, x1);
      } else {
        if (col < d) out[int64_t(t) * d + col] = from_float<T>(x0);
        if (col + 1 < d) out[int64_t(t) * d + col + 1] = from_float<T>(x1);
      }
    }
  }
}

// What a sweep of the backward computes: dq (the query phase); dk and dv (the key phase); at head dims
// over 96 the key phase is two sweeps, dk then dv, since two fp32 accumulators of kD16·16 columns beside
// K's and V's fragments exceed 255 registers (ptxas spills; a sweep for dv alone recomputes S, not dP).
enum BwdSweep { kSweepQ, kSweepKV, kSweepK, kSweepV };

// One sweep of the backward over every 16-row block of the head, warps in turn.
// sb0, sb1: the staged rows (K, V; or Q, dO); x0, x1: the owners' rows in global memory (Q, dO; or K, V);
// sl, sd: LSE (log2 units) and Delta of every query; out0 (dq; or dk), out1 (dv).
template <typename T, int kD16, int kSweep>
ECG_HD void bwd_phase(int tid, int warps, const T* sb0, const T* sb1, const float* sl, const float* sd, const T* x0,
                      const T* x1, T* out0, T* out1, int leads, int slots, int d, float scale, float scale_log2, bool vec) {
  constexpr int kSp = kD16 * kTile + kFwdPad, kN = 2 * kD16;
  constexpr bool kKeys = kSweep != kSweepQ;                  // owners are keys; statistics by column
  constexpr bool kDp = kSweep != kSweepV;                    // dP (and dS) needed
  constexpr bool kAcc0 = kDp, kAcc1 = kSweep == kSweepKV || kSweep == kSweepV;  // dq or dk; dv
  const int lane = tid % 32, g = lane / 4, c = lane % 4;
  const int r16 = lane % 16, c8 = (lane / 16) * 8;
  const int blocks = cdiv(slots, kTile);
  for (int ob = tid / 32; ob < leads * blocks; ob += warps) {
    const int lead = ob / blocks, t0 = (ob % blocks) * kTile;
    const int64_t base = int64_t(lead) * slots;
    uint32_t a0[kD16][4], a1[kDp ? kD16 : 1][4];  // Q, dO (or K, V) of the block's 16 rows
    load_a<T, kD16>(a0, x0 + base * d, t0, slots, d, vec, g, c);
    if constexpr (kDp) load_a<T, kD16>(a1, x1 + base * d, t0, slots, d, vec, g, c);
    float acc0[kAcc0 ? kN : 1][4] = {}, acc1[kAcc1 ? kN : 1][4] = {};  // dq (or dk), dv
    float own_l[2], own_d[2];                   // the query phase: LSE and Delta of this lane's two rows
    for (int h = 0; h < 2; ++h) {
      const int t = t0 + g + 8 * h;
      own_l[h] = t < slots ? sl[base + t] : INFINITY;  // a row past T: P = 0
      own_d[h] = t < slots ? sd[base + t] : 0.f;
    }

    // Row pass: the lead's T rows of the staged matrices, 16 at a time (rows past T read the last row and
    // are masked).
    const T *rows0 = sb0 + base * kSp, *rows1 = sb1 + base * kSp;
    for (int kb = 0; kb < slots; kb += kTile) {
      float s[2][4] = {}, dp[2][4] = {};
      const int key = kb + (lane % 8) + (lane / 16) * 8;
      const int boff = (key < slots ? key : slots - 1) * kSp + ((lane / 8) % 2) * 8;
      for (int kk = 0; kk < kD16; ++kk) {
        uint32_t b[4];
        ldmatrix_x4(b, rows0 + boff + kk * kTile);
        mma_16816<T>(s[0], a0[kk], b[0], b[1]);
        mma_16816<T>(s[1], a0[kk], b[2], b[3]);
        if constexpr (kDp) {
          ldmatrix_x4(b, rows1 + boff + kk * kTile);
          mma_16816<T>(dp[0], a1[kk], b[0], b[1]);
          mma_16816<T>(dp[1], a1[kk], b[2], b[3]);
        }
      }
      for (int j = 0; j < 2; ++j)
        for (int e = 0; e < 2; ++e) {
          const int col = kb + 8 * j + 2 * c + e;
          const bool live = col < slots;
          const float cl = kKeys && live ? sl[base + col] : 0.f, cd = kKeys && live ? sd[base + col] : 0.f;
          for (int h = 0; h < 2; ++h) {
            float& x = s[j][2 * h + e];
            float& y = dp[j][2 * h + e];
            const float p = live ? fast_exp2(x * scale_log2 - (kKeys ? cl : own_l[h])) : 0.f;
            x = p;
            y = p * (y - (kKeys ? cd : own_d[h]));
          }
        }
      const uint32_t pa[4] = {pack2<T>(s[0][0], s[0][1]), pack2<T>(s[0][2], s[0][3]), pack2<T>(s[1][0], s[1][1]),
                              pack2<T>(s[1][2], s[1][3])};
      const uint32_t da[4] = {pack2<T>(dp[0][0], dp[0][1]), pack2<T>(dp[0][2], dp[0][3]), pack2<T>(dp[1][0], dp[1][1]),
                              pack2<T>(dp[1][2], dp[1][3])};
      const int vkey = kb + r16;
      const int toff = (vkey < slots ? vkey : slots - 1) * kSp + c8;
      for (int jj = 0; jj < kD16; ++jj) {
        uint32_t b[4];
        if constexpr (kAcc0) {
          ldmatrix_x4_trans(b, rows0 + toff + jj * kTile);  // dQ += dS·K (dK += dSᵀ·Q)
          mma_16816<T>(acc0[2 * jj], da, b[0], b[1]);
          mma_16816<T>(acc0[2 * jj + 1], da, b[2], b[3]);
        }
        if constexpr (kAcc1) {
          ldmatrix_x4_trans(b, rows1 + toff + jj * kTile);  // dV += Pᵀ·dO
          mma_16816<T>(acc1[2 * jj], pa, b[0], b[1]);
          mma_16816<T>(acc1[2 * jj + 1], pa, b[2], b[3]);
        }
      }
    }

    // Column pass: for row i of the block, the staged row (m, t0 + i) of every other lead m (the forward's
    // gather: the scores are the diagonal of the owner's rows times the gathered rows; the gradient
    // products take diag(p) and diag(ds) as A fragments).
    const int krow = t0 + (lane % 8) + (lane / 16) * 8, vrow = t0 + r16;
    const int kslot = krow < slots ? krow : slots - 1, vslot = vrow < slots ? vrow : slots - 1;
    const int diag = (lane & ~3) | (g / 2);
    const bool mine = lane == diag;
    for (int m = 0; m < leads; ++m) {
      if (m == lead) continue;  // uniform over the warp
      const int64_t mbase = int64_t(m) * slots;
      const int boff = (mbase + kslot) * kSp + ((lane / 8) % 2) * 8;
      float st[2][4] = {}, dt[2][4] = {};
      for (int kk = 0; kk < kD16; ++kk) {
        uint32_t b[4];
        ldmatrix_x4(b, sb0 + boff + kk * kTile);
        mma_16816<T>(st[0], a0[kk], b[0], b[1]);
        mma_16816<T>(st[1], a0[kk], b[2], b[3]);
        if constexpr (kDp) {
          ldmatrix_x4(b, sb1 + boff + kk * kTile);
          mma_16816<T>(dt[0], a1[kk], b[0], b[1]);
          mma_16816<T>(dt[1], a1[kk], b[2], b[3]);
        }
      }
      const float sc[2] = {shfl_idx(g % 2 ? st[0][1] : st[0][0], diag), shfl_idx(g % 2 ? st[1][3] : st[1][2], diag)};
      const float dd[2] = {shfl_idx(g % 2 ? dt[0][1] : dt[0][0], diag), shfl_idx(g % 2 ? dt[1][3] : dt[1][2], diag)};
      float p[2], ds[2];
      for (int h = 0; h < 2; ++h) {
        const int t = t0 + g + 8 * h;
        float l = own_l[h], dl = own_d[h];
        if constexpr (kKeys) {  // the query (m, t): its statistics
          l = t < slots ? sl[mbase + t] : INFINITY;
          dl = t < slots ? sd[mbase + t] : 0.f;
        }
        p[h] = fast_exp2(sc[h] * scale_log2 - l);
        ds[h] = p[h] * (dd[h] - dl);
      }
      const uint32_t dsa[4] = {mine ? pack2<T>(g % 2 ? 0.f : ds[0], g % 2 ? ds[0] : 0.f) : 0u, 0u, 0u,
                               mine ? pack2<T>(g % 2 ? 0.f : ds[1], g % 2 ? ds[1] : 0.f) : 0u};
      const int toff = (mbase + vslot) * kSp + c8;
      if constexpr (kAcc0)
        for (int jj = 0; jj < kD16; ++jj) {
          uint32_t b[4];
          ldmatrix_x4_trans(b, sb0 + toff + jj * kTile);
          mma_16816<T>(acc0[2 * jj], dsa, b[0], b[1]);
          mma_16816<T>(acc0[2 * jj + 1], dsa, b[2], b[3]);
        }
      if constexpr (kAcc1) {
        const uint32_t pa[4] = {mine ? pack2<T>(g % 2 ? 0.f : p[0], g % 2 ? p[0] : 0.f) : 0u, 0u, 0u,
                                mine ? pack2<T>(g % 2 ? 0.f : p[1], g % 2 ? p[1] : 0.f) : 0u};
        for (int jj = 0; jj < kD16; ++jj) {
          uint32_t b[4];
          ldmatrix_x4_trans(b, sb1 + toff + jj * kTile);
          mma_16816<T>(acc1[2 * jj], pa, b[0], b[1]);
          mma_16816<T>(acc1[2 * jj + 1], pa, b[2], b[3]);
        }
      }
    }

    if constexpr (kAcc0) store_c<T, kN>(out0 + base * d, acc0, scale, t0, slots, d, vec, g, c);
    if constexpr (kAcc1) store_c<T, kN>(out1 + base * d, acc1, 1.f, t0, slots, d, vec, g, c);
  }
}

template <typename T, int kD16>
ECG_HD void bwd_cta(int tid, int warps, int64_t bh, char* smem, const T* q, const T* k, const T* v, const T* o,
                    const T* d_out, const float* lse, T* dq, T* dk, T* dv, int leads, int slots, int d, float scale,
                    bool vec) {
  constexpr int kDp = kD16 * kTile, kSp = kDp + kFwdPad;
  const int n = leads * slots, threads = warps * 32;
  T* sb0 = reinterpret_cast<T*>(smem);
  T* sb1 = sb0 + int64_t(n) * kSp;
  float* sl = reinterpret_cast<float*>(sb1 + int64_t(n) * kSp);
  float* sd = sl + n;
  const int64_t off = bh * n * d;
  q += off, k += off, v += off, o += off, d_out += off, dq += off, dk += off, dv += off, lse += bh * n;
  stage_rows(tid, threads, sb0, k, n, d, kDp, kSp, vec);
  stage_rows(tid, threads, sb1, v, n, d, kDp, kSp, vec);
  for (int r = tid; r < n; r += threads) {  // while the copies fly
    sl[r] = lse[r] * kLog2e;
    sd[r] = dot_global(o + int64_t(r) * d, d_out + int64_t(r) * d, d, vec);
  }
  cp_async_wait_all();
  cta_sync();
  bwd_phase<T, kD16, kSweepQ>(tid, warps, sb0, sb1, sl, sd, q, d_out, dq, dq, leads, slots, d, scale, scale * kLog2e, vec);
  cta_sync();
  stage_rows(tid, threads, sb0, q, n, d, kDp, kSp, vec);
  stage_rows(tid, threads, sb1, d_out, n, d, kDp, kSp, vec);
  cp_async_wait_all();
  cta_sync();
  if constexpr (kD16 <= kSplitKeyPhase) {
    bwd_phase<T, kD16, kSweepKV>(tid, warps, sb0, sb1, sl, sd, k, v, dk, dv, leads, slots, d, scale, scale * kLog2e, vec);
  } else {
    bwd_phase<T, kD16, kSweepK>(tid, warps, sb0, sb1, sl, sd, k, v, dk, dv, leads, slots, d, scale, scale * kLog2e, vec);
    bwd_phase<T, kD16, kSweepV>(tid, warps, sb0, sb1, sl, sd, k, v, dk, dv, leads, slots, d, scale, scale * kLog2e, vec);
  }
}

#ifndef ECG_JEPA_HOST_EMULATION
template <typename T, int kD16>
__global__ void __launch_bounds__(32 * kBwdWarps, kD16 <= 2 ? 2 : 1)  // 2: 128 registers, no spills up to d32
cropa_bwd_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ o,
                 const T* __restrict__ d_out, const float* __restrict__ lse, T* __restrict__ dq, T* __restrict__ dk,
                 T* __restrict__ dv, int leads, int slots, int d, float scale, bool vec) {
  extern __shared__ __align__(128) char smem[];
  bwd_cta<T, kD16>(threadIdx.x, blockDim.x / 32, blockIdx.x, smem, q, k, v, o, d_out, lse, dq, dk, dv, leads, slots, d,
                   scale, vec);
}
#endif

template <typename T, int kD16 = 1>
cudaError_t launch_bwd(int d16, const T* q, const T* k, const T* v, const T* o, const T* d_out, const float* lse, T* dq,
                       T* dk, T* dv, int64_t bh, int leads, int slots, int d, float scale, bool vec, size_t smem,
                       cudaStream_t stream) {
  if constexpr (kD16 < kMaxHeadDim / kTile) {
    if (d16 > kD16)
      return launch_bwd<T, kD16 + 1>(d16, q, k, v, o, d_out, lse, dq, dk, dv, bh, leads, slots, d, scale, vec, smem, stream);
  }
#ifdef ECG_JEPA_HOST_EMULATION
  (void)stream;
  host::Cta cta;
  std::vector<uint4> buffer(smem / sizeof(uint4) + 1);
  char* base = reinterpret_cast<char*>(buffer.data());
  for (int64_t x = 0; x < bh; ++x)
    host::run_cta(cta, kBwdWarps * 32, [&](int tid) {
      bwd_cta<T, kD16>(tid, kBwdWarps, x, base, q, k, v, o, d_out, lse, dq, dk, dv, leads, slots, d, scale, vec);
    });
  return cudaSuccess;
#else
  cudaError_t err = cudaFuncSetAttribute(cropa_bwd_kernel<T, kD16>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (err != cudaSuccess) return err;
  cropa_bwd_kernel<T, kD16><<<unsigned(bh), kBwdWarps * 32, smem, stream>>>(q, k, v, o, d_out, lse, dq, dk, dv, leads,
                                                                             slots, d, scale, vec);
  return cudaGetLastError();
#endif
}

}  // namespace

AttentionPlan attention_plan(DType dtype, int leads, int slots, int head_dim, size_t smem_limit) {
  AttentionPlan plan{0, 0, 0};
  dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const size_t fwd = fwd_smem_bytes(leads, slots, head_dim, sizeof(T));
    const size_t bwd = bwd_smem_bytes(leads, slots, head_dim, sizeof(T));
    plan.fwd_smem = sizeof(T) == 2 && fwd <= smem_limit ? fwd : 0;
    plan.bwd_group = sizeof(T) == 2 && bwd <= smem_limit ? leads : 0;
    plan.bwd_smem = plan.bwd_group ? bwd : 0;
    return cudaSuccess;
  });
  return plan;
}

cudaError_t cropa_attention_fwd(DType dtype, const void* q, const void* k, const void* v, void* o, float* lse,
                                int64_t bh, int leads, int slots, int head_dim, float scale, size_t smem_limit,
                                cudaStream_t stream) {
  if (head_dim < 1 || head_dim > kMaxHeadDim || leads < 1 || slots < 1) return cudaErrorInvalidValue;
  const AttentionPlan plan = attention_plan(dtype, leads, slots, head_dim, smem_limit);
  if (plan.fwd_smem == 0) return cudaErrorInvalidValue;
  return dispatch(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    if constexpr (sizeof(T) != 2) {
      return cudaErrorInvalidValue;  // tensor cores: 16-bit data only
    } else {
      const bool vec = vectorizable(head_dim, head_dim, sizeof(T), {q, k, v, o});
      return launch_fwd<T>(cdiv(head_dim, kTile), static_cast<const T*>(q), static_cast<const T*>(k),
                           static_cast<const T*>(v), static_cast<T*>(o), lse, bh, leads, slots, head_dim,
                           scale * kLog2e, vec, plan.fwd_smem, smem_limit, stream);
    }
  });
}

cudaError_t cropa_attention_bwd(DType dtype, const void* q, const void* k, const void* v, const void* o,
                                const void* d_out, const float* lse, void* dq, void* dk, void* dv, int64_t bh,
                                int leads, int slots, int head_dim, float scale, size_t smem_limit, cudaStream_t stream) {
  if (head_dim < 1 || head_dim > kMaxHeadDim || leads < 1 || slots < 1) return cudaErrorInvalidValue;
  const AttentionPlan plan = attention_plan(dtype, leads, slots, head_dim, smem_limit);
  if (plan.bwd_group == 0) return cudaErrorInvalidValue;
  return dispatch(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    if constexpr (sizeof(T) != 2) {
      return cudaErrorInvalidValue;  // tensor cores: 16-bit data only
    } else {
      const bool vec = vectorizable(head_dim, head_dim, sizeof(T), {q, k, v, o, d_out, dq, dk, dv});
      return launch_bwd<T>(cdiv(head_dim, kTile), static_cast<const T*>(q), static_cast<const T*>(k),
                           static_cast<const T*>(v), static_cast<const T*>(o), static_cast<const T*>(d_out), lse,
                           static_cast<T*>(dq), static_cast<T*>(dk), static_cast<T*>(dv), bh, leads, slots, head_dim,
                           scale, vec, plan.bwd_smem, stream);
    }
  });
}

}  // namespace ecg_jepa
