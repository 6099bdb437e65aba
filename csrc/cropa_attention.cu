// CroPA attention, forward and backward, in the block-synchronous model of block.cuh.
//
// One CTA per (batch·head, block of 16 slots, group of G leads). A query (l, t) sees the T keys of its own
// lead (the row part) and the L - 1 keys (m, t), m != l, of its own slot (the column part) under one
// softmax. The CTA keeps in shared memory its queries (G leads x 16 slots), the keys and values of every
// lead at its 16 slots (the column part's keys, read from global memory once), and streams the keys and
// values of its leads block by block for the row part: 16x16 tensor-core tiles (WMMA) for S = QKᵀ and P·V,
// an online softmax over the blocks started at the column scores' maximum, the column probabilities and
// values added under the final maximum. The backward is one kernel after a Delta = rowsum(dO∘O) pass:
// dq of the CTA's queries (row part against the streamed key blocks, column part against every lead's
// keys at its slots), then dk and dv of its keys (row part against the streamed query blocks, column part
// against every lead's queries at its slots). Each gradient row is written by the one CTA that owns it:
// no atomics. G is the largest group whose shared memory fits the device (attention_plan).
#include "block.cuh"

namespace ecg_jepa {
namespace {

constexpr float kNegInf = -INFINITY;

// Shared-memory layout of the forward CTA: G leads of L, head dim padded to dp, element size ts.
struct FwdSmem {
  size_t q, k, v, k_all, v_all, s, p, o, c, mx, sum, total;
  ECG_HOST_DEVICE FwdSmem(int leads, int group, int dp, int ts) {
    Carve cv;
    const size_t tile = size_t(kTile) * dp;
    q = cv.take(group * tile * ts);          // the group's queries at the CTA's slots
    k = cv.take(group * tile * ts);          // the group's keys of the current key block
    v = cv.take(group * tile * ts);
    k_all = cv.take(leads * tile * ts);      // every lead's keys and values at the CTA's slots
    v_all = cv.take(leads * tile * ts);
    s = cv.take(group * kTile * kTile * 4);  // row scores of the current block
    p = cv.take(group * kTile * kTile * ts); // their probabilities, in the storage type
    o = cv.take(group * tile * 4);           // the output accumulator
    c = cv.take(group * kTile * leads * 4);  // column scores
    mx = cv.take(group * kTile * 4);         // running maximum and sum per query
    sum = cv.take(group * kTile * 4);
    total = cv.used;
  }
};

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
// gn·tiles warp items (one per lead and 16 columns, tiles = dp / 16): P·V in the forward, dS·K in the
// backward's pass A.
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
ECG_HD void fwd_block(Block& blk, char* smem, const T* q, const T* k, const T* v, T* o, float* lse, int leads,
                      int group, int slots, int d, float scale, bool vec) {
  const int dp = round_up(d, kTile), nb = cdiv(slots, kTile), tiles = dp / kTile;
  const Tokens tok{leads, slots};
  const int64_t bh = blk.x, n = int64_t(leads) * slots;
  const int jb = blk.y, g0 = blk.z * group, gn = group < leads - g0 ? group : leads - g0;
  const FwdSmem lay(leads, group, dp, int(sizeof(T)));
  T *sq = reinterpret_cast<T*>(smem + lay.q), *sk = reinterpret_cast<T*>(smem + lay.k);
  T *sv = reinterpret_cast<T*>(smem + lay.v), *sk_all = reinterpret_cast<T*>(smem + lay.k_all);
  T *sv_all = reinterpret_cast<T*>(smem + lay.v_all), *sp = reinterpret_cast<T*>(smem + lay.p);
  float *ss = reinterpret_cast<float*>(smem + lay.s), *so = reinterpret_cast<float*>(smem + lay.o);
  float *sc = reinterpret_cast<float*>(smem + lay.c), *smax = reinterpret_cast<float*>(smem + lay.mx);
  float* ssum = reinterpret_cast<float*>(smem + lay.sum);
  q += bh * n * d, k += bh * n * d, v += bh * n * d, o += bh * n * d, lse += bh * n;
  const int slot0 = jb * kTile;

  // 1. The group's queries; every lead's keys and values at these slots.
  Rows<T>::load(blk, sq, dp, q, d, d, gn * kTile, vec, [&](int r) { return tok.row(g0 + r / kTile, slot0 + r % kTile); });
  Rows<T>::load(blk, sk_all, dp, k, d, d, leads * kTile, vec, [&](int r) { return tok.row(r / kTile, slot0 + r % kTile); });
  Rows<T>::load(blk, sv_all, dp, v, d, d, leads * kTile, vec, [&](int r) { return tok.row(r / kTile, slot0 + r % kTile); });
  blk.threads(gn * kTile * dp, [&](int i) { so[i] = 0.f; });
  blk.sync();

  // 2. Column scores, key (m, t) for every other lead m; their maximum starts the running maximum.
  blk.threads(gn * kTile, [&](int r) {
    const int lead = g0 + r / kTile, t = r % kTile;
    float top = kNegInf;
    for (int m = 0; m < leads; ++m) {
      const float x = (m != lead && slot0 + t < slots) ? scale * dot(sq + r * dp, sk_all + (m * kTile + t) * dp, d)
                                                        : kNegInf;
      sc[r * leads + m] = x;
      top = x > top ? x : top;
    }
    smax[r] = top;
    ssum[r] = 0.f;
  });
  blk.sync();

  // 3. The row part, one block of 16 key slots at a time.
  for (int i = 0; i < nb; ++i) {
    Rows<T>::load(blk, sk, dp, k, d, d, gn * kTile, vec, [&](int r) { return tok.row(g0 + r / kTile, i * kTile + r % kTile); });
    Rows<T>::load(blk, sv, dp, v, d, d, gn * kTile, vec, [&](int r) { return tok.row(g0 + r / kTile, i * kTile + r % kTile); });
    blk.sync();
    blk.warps(gn, [&](int g) {
      tile_product<T, true>(blk, sq + g * kTile * dp, dp, sk + g * kTile * dp, dp, ss + g * kTile * kTile, kTile, dp, false);
    });
    blk.sync();
    blk.threads(gn * kTile, [&](int r) {
      float* srow = ss + r * kTile;
      float top = smax[r];
      for (int s = 0; s < kTile; ++s) {
        const float x = i * kTile + s < slots ? srow[s] * scale : kNegInf;  // block i's slot 0 is a real key
        srow[s] = x;
        top = x > top ? x : top;
      }
      const float alpha = fast_exp(smax[r] - top);
      float sum = 0.f;
      for (int s = 0; s < kTile; ++s) {
        const float p = fast_exp(srow[s] - top);
        sp[r * kTile + s] = from_float<T>(p);
        sum += p;
      }
      float* orow = so + r * dp;
      for (int e = 0; e < dp; ++e) orow[e] *= alpha;
      ssum[r] = ssum[r] * alpha + sum;
      smax[r] = top;
    });
    blk.sync();
    accumulate_products(blk, sp, sv, so, gn, dp, tiles);
    blk.sync();
  }

  // 4. The column part under the final maximum; normalise; out and the log-sum-exp.
  blk.threads(gn * kTile, [&](int r) {
    const int t = r % kTile;
    float* orow = so + r * dp;
    float sum = ssum[r];
    for (int m = 0; m < leads; ++m) {
      const float p = fast_exp(sc[r * leads + m] - smax[r]);
      if (p == 0.f) continue;
      sum += p;
      const T* vrow = sv_all + (m * kTile + t) * dp;
      for (int e = 0; e < d; ++e) orow[e] += p * to_float(vrow[e]);
    }
    const float inv = fast_rcp(sum);
    for (int e = 0; e < dp; ++e) orow[e] *= inv;
    const int64_t row = tok.row(g0 + r / kTile, slot0 + t);
    if (row >= 0) lse[row] = smax[r] + fast_log(sum);
  });
  blk.sync();
  Rows<T>::store(blk, o, d, d, so, dp, gn * kTile, 1.f, vec, [&](int r) { return tok.row(g0 + r / kTile, slot0 + r % kTile); });
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
#ifndef ECG_JEPA_HOST_EMULATION
template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
cropa_fwd_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ o,
                 float* __restrict__ lse, int leads, int group, int slots, int d, float scale, bool vec) {
  extern __shared__ __align__(128) char smem[];
  Block blk;
  fwd_block<T>(blk, smem, q, k, v, o, lse, leads, group, slots, d, scale, vec);
}

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

// Leads per CTA: the most that leave room for kCtasPerSm CTAs per SM (that fraction of the per-CTA limit;
// latency hiding needs more than one CTA of 4 warps), else the most that fit at all, else 0.
template <typename T>
int best_group(int leads, int dp, size_t limit, bool forward) {
  for (const size_t budget : {limit / kCtasPerSm, limit}) {
    for (int g = leads; g >= 1; --g) {
      const size_t bytes = forward ? FwdSmem(leads, g, dp, sizeof(T)).total : BwdSmem(leads, g, dp, sizeof(T)).total;
      if (bytes <= budget) return g;
    }
  }
  return 0;
}

}  // namespace

AttentionPlan attention_plan(DType dtype, int leads, int head_dim, size_t smem_limit) {
  AttentionPlan plan{0, 0, 0, 0};
  const int dp = round_up(head_dim, kTile);
  dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    plan.fwd_group = best_group<T>(leads, dp, smem_limit, true);
    plan.bwd_group = best_group<T>(leads, dp, smem_limit, false);
    plan.fwd_smem = plan.fwd_group ? FwdSmem(leads, plan.fwd_group, dp, sizeof(T)).total : 0;
    plan.bwd_smem = plan.bwd_group ? BwdSmem(leads, plan.bwd_group, dp, sizeof(T)).total : 0;
    return cudaSuccess;
  });
  return plan;
}

cudaError_t cropa_attention_fwd(DType dtype, const void* q, const void* k, const void* v, void* o, float* lse,
                                int64_t bh, int leads, int slots, int head_dim, float scale, size_t smem_limit,
                                cudaStream_t stream) {
  if (head_dim < 1 || head_dim > kMaxHeadDim || leads < 1 || slots < 1) return cudaErrorInvalidValue;
  const AttentionPlan plan = attention_plan(dtype, leads, head_dim, smem_limit);
  if (plan.fwd_group == 0) return cudaErrorInvalidValue;
  const int nb = cdiv(slots, kTile), groups = cdiv(leads, plan.fwd_group);
  return dispatch(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const T *qt = static_cast<const T*>(q), *kt = static_cast<const T*>(k), *vt = static_cast<const T*>(v);
    T* ot = static_cast<T*>(o);
    const bool vec = vectorizable(head_dim, head_dim, sizeof(T), {q, k, v, o});
#ifdef ECG_JEPA_HOST_EMULATION
    (void)stream;
    return run_grid(bh, nb, groups, plan.fwd_smem, [&](Block& blk, char* smem) {
      fwd_block<T>(blk, smem, qt, kt, vt, ot, lse, leads, plan.fwd_group, slots, head_dim, scale, vec);
    });
#else
    cudaError_t err = cudaFuncSetAttribute(cropa_fwd_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           int(plan.fwd_smem));
    if (err != cudaSuccess) return err;
    cropa_fwd_kernel<T><<<dim3(unsigned(bh), unsigned(nb), unsigned(groups)), kThreads, plan.fwd_smem, stream>>>(
        qt, kt, vt, ot, lse, leads, plan.fwd_group, slots, head_dim, scale, vec);
    return cudaGetLastError();
#endif
  });
}

cudaError_t cropa_attention_bwd(DType dtype, const void* q, const void* k, const void* v, const void* o,
                                const void* d_out, const float* lse, float* delta, void* dq, void* dk, void* dv,
                                int64_t bh, int leads, int slots, int head_dim, float scale, size_t smem_limit,
                                cudaStream_t stream) {
  if (head_dim < 1 || head_dim > kMaxHeadDim || leads < 1 || slots < 1) return cudaErrorInvalidValue;
  const AttentionPlan plan = attention_plan(dtype, leads, head_dim, smem_limit);
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
