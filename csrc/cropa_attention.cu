// CroPA attention, forward and backward. A query (l, t) sees the T keys of its own lead (the row part) and
// the L - 1 keys (m, t), m != l, of its own slot (the column part) under one softmax.
//
// Forward (warp-level, warp.cuh): one CTA per batch·head stages the head's keys and values in shared memory;
// warps own 16-query blocks and keep scores, probabilities and the output in mma.sync fragments (see fwd_cta).
//
// Backward (block-synchronous, block.cuh): one CTA per (batch·head, block of 16 slots, group of G leads),
// one kernel after a Delta = rowsum(dO∘O) pass: dq of the CTA's queries (row part against the streamed key
// blocks, column part against every lead's keys at its slots), then dk and dv of its keys (row part against
// the streamed query blocks, column part against every lead's queries at its slots), 16x16 WMMA tiles through
// shared memory. Each gradient row is written by the one CTA that owns it: no atomics. G is the largest group
// whose shared memory fits the device (attention_plan).
#include "warp.cuh"

namespace ecg_jepa {
namespace {

constexpr float kNegInf = -INFINITY;

// Shared-memory layout of the backward CTA.
struct BwdSmem {
  size_t own0, own1, str0, str1, all0, all1, acc0, acc1, s, dp, p, ds, lse_own, delta_own, lse_str, delta_str,
      lse_all, delta_all, total;
  ECG_HOST_DEVICE BwdSmem(int leads, int group, int dpad, int ts) {
    Carve cv;
    const size_t tile = size_t(kTile) * dpad;
    own0 = cv.take(group * tile * ts);  // the CTA's own rows (queries and dO, then keys and values)
    own1 = cv.take(group * tile * ts);
    str0 = cv.take(group * tile * ts);  // streamed blocks of its leads
    str1 = cv.take(group * tile * ts);
    all0 = cv.take(leads * tile * ts);  // every lead's rows at its slots (the column part)
    all1 = cv.take(leads * tile * ts);
    acc0 = cv.take(group * tile * 4);   // gradient accumulators
    acc1 = cv.take(group * tile * 4);
    s = cv.take(group * kTile * kTile * 4);
    dp = cv.take(group * kTile * kTile * 4);
    p = cv.take(group * kTile * kTile * ts);
    ds = cv.take(group * kTile * kTile * ts);
    lse_own = cv.take(group * kTile * 4);
    delta_own = cv.take(group * kTile * 4);
    lse_str = cv.take(group * kTile * 4);
    delta_str = cv.take(group * kTile * 4);
    lse_all = cv.take(leads * kTile * 4);
    delta_all = cv.take(leads * kTile * 4);
    total = cv.used;
  }
};

// Where the rows of a CTA live: token rows of one (batch·head) matrix, -1 for slots past T.
struct Tokens {
  int leads, slots;
  ECG_HD int64_t row(int lead, int slot) const { return slot < slots ? int64_t(lead) * slots + slot : -1; }
};

template <typename T>
ECG_HD void load_stats(Block& blk, float* dst, const float* src, int n_rows, Tokens tok, int lead0, int slot0) {
  blk.threads(n_rows, [&](int r) {
    const int64_t row = tok.row(lead0 + r / kTile, slot0 + r % kTile);
    dst[r] = row >= 0 ? src[row] : 0.f;
  });
}

// For each lead g of the group: acc[g] += p[g] · rows[g], p 16 x 16 and rows, acc 16 x dp (row-major), on
// gn·tiles warp items (one per lead and 16 columns, tiles = dp / 16): dS·K in the backward's pass A.
template <typename T>
ECG_HD void accumulate_products(Block& blk, const T* p, const T* rows, float* acc, int gn, int dp, int tiles) {
  blk.warps(gn * tiles, [&](int job) {
    const int g = job / tiles, c = job % tiles;
    tile_product<T, false>(blk, p + g * kTile * kTile, kTile, rows + g * kTile * dp + c * kTile, dp,
                           acc + g * kTile * dp + c * kTile, dp, kTile, true);
  });
}

// ---------------------------------------------------------------------------------------------------
template <typename T>
ECG_HD void delta_block(Block& blk, const T* o, const T* d_out, float* delta, int64_t rows, int d, bool vec) {
  blk.threads(kThreads, [&](int i) {
    const int64_t row = int64_t(blk.x) * kThreads + i;
    if (row < rows) delta[row] = dot_global(o + row * d, d_out + row * d, d, vec);
  });
}

// For each lead g of the group: s[g] = a0[g] · b0[g]ᵀ and t[g] = a1[g] · b1[g]ᵀ (16 x 16 each), on 2·gn warp
// items: the backward's scores and dP, queries x keys in pass A, keys x queries in pass B.
template <typename T>
ECG_HD void pair_products(Block& blk, const T* a0, const T* b0, float* s, const T* a1, const T* b1, float* t, int gn,
                          int dp) {
  blk.warps(2 * gn, [&](int job) {
    const int g = job % gn;
    const bool first = job < gn;
    tile_product<T, true>(blk, (first ? a0 : a1) + g * kTile * dp, dp, (first ? b0 : b1) + g * kTile * dp, dp,
                          (first ? s : t) + g * kTile * kTile, kTile, dp, false);
  });
}

template <typename T>
ECG_HD void bwd_block(Block& blk, char* smem, const T* q, const T* k, const T* v, const T* d_out, const float* lse,
                      const float* delta, T* dq, T* dk, T* dv, int leads, int group, int slots, int d, float scale,
                      bool vec) {
  const int dp = round_up(d, kTile), nb = cdiv(slots, kTile), tiles = dp / kTile;
  const Tokens tok{leads, slots};
  const int64_t bh = blk.x, n = int64_t(leads) * slots;
  const int jb = blk.y, g0 = blk.z * group, gn = group < leads - g0 ? group : leads - g0;
  const int slot0 = jb * kTile;
  const BwdSmem lay(leads, group, dp, int(sizeof(T)));
  auto tiles_of = [&](size_t at) { return reinterpret_cast<T*>(smem + at); };
  auto floats_of = [&](size_t at) { return reinterpret_cast<float*>(smem + at); };
  T *own0 = tiles_of(lay.own0), *own1 = tiles_of(lay.own1), *str0 = tiles_of(lay.str0), *str1 = tiles_of(lay.str1);
  T *all0 = tiles_of(lay.all0), *all1 = tiles_of(lay.all1), *sp = tiles_of(lay.p), *sds = tiles_of(lay.ds);
  float *acc0 = floats_of(lay.acc0), *acc1 = floats_of(lay.acc1), *ss = floats_of(lay.s), *sdp = floats_of(lay.dp);
  float *lse_own = floats_of(lay.lse_own), *delta_own = floats_of(lay.delta_own);
  float *lse_str = floats_of(lay.lse_str), *delta_str = floats_of(lay.delta_str);
  float *lse_all = floats_of(lay.lse_all), *delta_all = floats_of(lay.delta_all);
  const int64_t off = bh * n * d;
  q += off, k += off, v += off, d_out += off, dq += off, dk += off, dv += off, lse += bh * n, delta += bh * n;
  auto group_rows = [&](int slot_base) { return [&, slot_base](int r) { return tok.row(g0 + r / kTile, slot_base + r % kTile); }; };
  auto all_rows = [&](int r) { return tok.row(r / kTile, slot0 + r % kTile); };
  const int rows = gn * kTile;

  // ---- Pass A: dq of the group's queries at these slots.
  Rows<T>::load(blk, own0, dp, q, d, d, rows, vec, group_rows(slot0));
  Rows<T>::load(blk, own1, dp, d_out, d, d, rows, vec, group_rows(slot0));
  Rows<T>::load(blk, all0, dp, k, d, d, leads * kTile, vec, all_rows);
  Rows<T>::load(blk, all1, dp, v, d, d, leads * kTile, vec, all_rows);
  load_stats<T>(blk, lse_own, lse, rows, tok, g0, slot0);
  load_stats<T>(blk, delta_own, delta, rows, tok, g0, slot0);
  blk.threads(rows * dp, [&](int i) { acc0[i] = 0.f; });
  blk.sync();
  blk.threads(rows, [&](int r) {  // column part: key (m, t) of every other lead
    const int lead = g0 + r / kTile, t = r % kTile;
    if (slot0 + t >= slots) return;
    float* arow = acc0 + r * dp;
    for (int m = 0; m < leads; ++m) {
      if (m == lead) continue;
      const T* krow = all0 + (m * kTile + t) * dp;
      const float p = fast_exp(scale * dot(own0 + r * dp, krow, d) - lse_own[r]);
      const float ds = p * (dot(own1 + r * dp, all1 + (m * kTile + t) * dp, d) - delta_own[r]);
      for (int e = 0; e < d; ++e) arow[e] += ds * to_float(krow[e]);
    }
  });
  for (int i = 0; i < nb; ++i) {  // row part: the lead's keys, block by block
    blk.sync();
    Rows<T>::load(blk, str0, dp, k, d, d, rows, vec, group_rows(i * kTile));
    Rows<T>::load(blk, str1, dp, v, d, d, rows, vec, group_rows(i * kTile));
    blk.sync();
    pair_products(blk, own0, str0, ss, own1, str1, sdp, gn, dp);
    blk.sync();
    blk.threads(rows * kTile, [&](int e) {
      const int r = e / kTile, s = e % kTile;
      const bool live = slot0 + r % kTile < slots && i * kTile + s < slots;
      const float p = live ? fast_exp(scale * ss[e] - lse_own[r]) : 0.f;
      sds[e] = from_float<T>(p * (sdp[e] - delta_own[r]));
    });
    blk.sync();
    accumulate_products(blk, sds, str0, acc0, gn, dp, tiles);
  }
  blk.sync();
  Rows<T>::store(blk, dq, d, d, acc0, dp, rows, scale, vec, group_rows(slot0));
  blk.sync();

  // ---- Pass B: dk and dv of the group's keys at these slots.
  Rows<T>::load(blk, own0, dp, k, d, d, rows, vec, group_rows(slot0));
  Rows<T>::load(blk, own1, dp, v, d, d, rows, vec, group_rows(slot0));
  Rows<T>::load(blk, all0, dp, q, d, d, leads * kTile, vec, all_rows);
  Rows<T>::load(blk, all1, dp, d_out, d, d, leads * kTile, vec, all_rows);
  load_stats<T>(blk, lse_all, lse, leads * kTile, tok, 0, slot0);
  load_stats<T>(blk, delta_all, delta, leads * kTile, tok, 0, slot0);
  blk.threads(rows * dp, [&](int i) { acc0[i] = 0.f, acc1[i] = 0.f; });
  blk.sync();
  blk.threads(rows, [&](int r) {  // column part: query (m, s) of every other lead
    const int lead = g0 + r / kTile, s = r % kTile;
    if (slot0 + s >= slots) return;
    float *krow_acc = acc0 + r * dp, *vrow_acc = acc1 + r * dp;
    for (int m = 0; m < leads; ++m) {
      if (m == lead) continue;
      const int qr = m * kTile + s;
      const T *qrow = all0 + qr * dp, *dorow = all1 + qr * dp;
      const float p = fast_exp(scale * dot(qrow, own0 + r * dp, d) - lse_all[qr]);
      const float ds = p * (dot(dorow, own1 + r * dp, d) - delta_all[qr]);
      for (int e = 0; e < d; ++e) {
        vrow_acc[e] += p * to_float(dorow[e]);
        krow_acc[e] += ds * to_float(qrow[e]);
      }
    }
  });
  for (int i = 0; i < nb; ++i) {  // row part: the lead's queries, block by block
    blk.sync();
    Rows<T>::load(blk, str0, dp, q, d, d, rows, vec, group_rows(i * kTile));
    Rows<T>::load(blk, str1, dp, d_out, d, d, rows, vec, group_rows(i * kTile));
    load_stats<T>(blk, lse_str, lse, rows, tok, g0, i * kTile);
    load_stats<T>(blk, delta_str, delta, rows, tok, g0, i * kTile);
    blk.sync();
    pair_products(blk, own0, str0, ss, own1, str1, sdp, gn, dp);  // keys x queries here
    blk.sync();
    blk.threads(rows * kTile, [&](int e) {
      const int r = e / kTile, t = e % kTile, g = r / kTile;
      const bool live = slot0 + r % kTile < slots && i * kTile + t < slots;
      const float p = live ? fast_exp(scale * ss[e] - lse_str[g * kTile + t]) : 0.f;
      sp[e] = from_float<T>(p);
      sds[e] = from_float<T>(p * (sdp[e] - delta_str[g * kTile + t]));
    });
    blk.sync();
    blk.warps(2 * gn * tiles, [&](int job) {
      const int half = job / (gn * tiles), g = (job % (gn * tiles)) / tiles, c = job % tiles;
      const T* a = (half == 0 ? sp : sds) + g * kTile * kTile;
      const T* b = (half == 0 ? str1 : str0) + g * kTile * dp + c * kTile;
      float* acc = (half == 0 ? acc1 : acc0) + g * kTile * dp + c * kTile;
      tile_product<T, false>(blk, a, kTile, b, dp, acc, dp, kTile, true);
    });
  }
  blk.sync();
  Rows<T>::store(blk, dk, d, d, acc0, dp, rows, scale, vec, group_rows(slot0));
  Rows<T>::store(blk, dv, d, d, acc1, dp, rows, 1.f, vec, group_rows(slot0));
}

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
#ifndef ECG_JEPA_HOST_EMULATION
template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
cropa_delta_kernel(const T* __restrict__ o, const T* __restrict__ d_out, float* __restrict__ delta, int64_t rows, int d,
                   bool vec) {
  Block blk;
  delta_block<T>(blk, o, d_out, delta, rows, d, vec);
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
cropa_bwd_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ d_out,
                 const float* __restrict__ lse, const float* __restrict__ delta, T* __restrict__ dq, T* __restrict__ dk,
                 T* __restrict__ dv, int leads, int group, int slots, int d, float scale, bool vec) {
  extern __shared__ __align__(128) char smem[];
  Block blk;
  bwd_block<T>(blk, smem, q, k, v, d_out, lse, delta, dq, dk, dv, leads, group, slots, d, scale, vec);
}
#endif

// Runs body(Block&, smem) for every CTA of the grid: on the GPU as a kernel launch, in the emulation in turn.
template <typename Body>
cudaError_t run_grid(int64_t gx, int gy, int gz, size_t smem_bytes, Body&& body) {
#ifdef ECG_JEPA_HOST_EMULATION
  std::vector<char> smem(smem_bytes + 128);
  for (int64_t x = 0; x < gx; ++x)
    for (int y = 0; y < gy; ++y)
      for (int z = 0; z < gz; ++z) {
        Block blk{int(x), y, z};
        body(blk, smem.data());
      }
  return cudaSuccess;
#else
  (void)gx, (void)gy, (void)gz, (void)smem_bytes, (void)body;
  return cudaErrorInvalidValue;  // the GPU path launches its kernels directly
#endif
}

// Backward leads per CTA: the most that leave room for kCtasPerSm CTAs per SM (that fraction of the per-CTA
// limit; latency hiding needs more than one CTA of 4 warps), else the most that fit at all, else 0.
template <typename T>
int best_group(int leads, int dp, size_t limit) {
  for (const size_t budget : {limit / kCtasPerSm, limit}) {
    for (int g = leads; g >= 1; --g)
      if (BwdSmem(leads, g, dp, sizeof(T)).total <= budget) return g;
  }
  return 0;
}

}  // namespace

AttentionPlan attention_plan(DType dtype, int leads, int slots, int head_dim, size_t smem_limit) {
  AttentionPlan plan{0, 0, 0};
  const int dp = round_up(head_dim, kTile);
  dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const size_t fwd = fwd_smem_bytes(leads, slots, head_dim, sizeof(T));
    plan.fwd_smem = sizeof(T) == 2 && fwd <= smem_limit ? fwd : 0;
    plan.bwd_group = best_group<T>(leads, dp, smem_limit);
    plan.bwd_smem = plan.bwd_group ? BwdSmem(leads, plan.bwd_group, dp, sizeof(T)).total : 0;
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
                                const void* d_out, const float* lse, float* delta, void* dq, void* dk, void* dv,
                                int64_t bh, int leads, int slots, int head_dim, float scale, size_t smem_limit,
                                cudaStream_t stream) {
  if (head_dim < 1 || head_dim > kMaxHeadDim || leads < 1 || slots < 1) return cudaErrorInvalidValue;
  const AttentionPlan plan = attention_plan(dtype, leads, slots, head_dim, smem_limit);
  if (plan.bwd_group == 0) return cudaErrorInvalidValue;
  const int nb = cdiv(slots, kTile), groups = cdiv(leads, plan.bwd_group);
  const int64_t rows = bh * leads * slots;
  return dispatch(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const T *qt = static_cast<const T*>(q), *kt = static_cast<const T*>(k), *vt = static_cast<const T*>(v);
    const T *ot = static_cast<const T*>(o), *gt = static_cast<const T*>(d_out);
    T *dqt = static_cast<T*>(dq), *dkt = static_cast<T*>(dk), *dvt = static_cast<T*>(dv);
    const bool vec = vectorizable(head_dim, head_dim, sizeof(T), {q, k, v, o, d_out, dq, dk, dv});
    const int64_t delta_ctas = (rows + kThreads - 1) / kThreads;
#ifdef ECG_JEPA_HOST_EMULATION
    (void)stream;
    run_grid(delta_ctas, 1, 1, 0, [&](Block& blk, char*) { delta_block<T>(blk, ot, gt, delta, rows, head_dim, vec); });
    return run_grid(bh, nb, groups, plan.bwd_smem, [&](Block& blk, char* smem) {
      bwd_block<T>(blk, smem, qt, kt, vt, gt, lse, delta, dqt, dkt, dvt, leads, plan.bwd_group, slots, head_dim, scale, vec);
    });
#else
    cropa_delta_kernel<T><<<unsigned(delta_ctas), kThreads, 0, stream>>>(ot, gt, delta, rows, head_dim, vec);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    err = cudaFuncSetAttribute(cropa_bwd_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(plan.bwd_smem));
    if (err != cudaSuccess) return err;
    cropa_bwd_kernel<T><<<dim3(unsigned(bh), unsigned(nb), unsigned(groups)), kThreads, plan.bwd_smem, stream>>>(
        qt, kt, vt, gt, lse, delta, dqt, dkt, dvt, leads, plan.bwd_group, slots, head_dim, scale, vec);
    return cudaGetLastError();
#endif
  });
}

}  // namespace ecg_jepa
