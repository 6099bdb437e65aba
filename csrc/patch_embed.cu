// Fused patch embedding, forward and dx, in the block-synchronous model of block.cuh.
//
// Forward: one CTA per (sample·lead, chunk of 128 output dims). It reads the lead's visible patches once
// (16 tokens per tile, a patch padded from P to a multiple of 16 samples with zeros) and its chunk of W,
// multiplies them with 16x16 tensor-core tiles (Xpatches · Wᵀ), adds the bias and the position rows, and
// writes the tokens, 16 bytes at a time. dx: one CTA per sample·lead: the token gradients (read 16 bytes at a
// time) times W, 128 dims at a time, written to each visible patch's place in dx (hidden slots stay zero).
// dW and db are GEMM reductions left to the BLAS (see the op's launcher).
#include "block.cuh"

namespace ecg_jepa {
namespace {

constexpr int kDimChunk = 128;

struct EmbedSmem {
  size_t x, w, acc, total;
  ECG_HOST_DEVICE EmbedSmem(int t_vis, int patch, int ts) {
    Carve cv;
    const int rows = round_up(t_vis, kTile), pp = round_up(patch, kTile);
    const size_t wide = kDimChunk > pp ? kDimChunk : pp;
    x = cv.take(size_t(rows) * wide * ts);    // patches (forward: rows of pp) or token gradients (dx: of ≤ 128)
    w = cv.take(size_t(kDimChunk) * pp * ts);  // a chunk of W, rows of pp samples
    acc = cv.take(size_t(rows) * wide * 4);
    total = cv.used;
  }
};

ECG_HD int slot_of(const int32_t* vis, int vis_rows, int b, int t_vis, int j) {
  return vis[(vis_rows > 1 ? b : 0) * t_vis + j];
}

template <typename T>
ECG_HD void embed_fwd_block(Block& blk, char* smem, const T* x, const T* w, const T* bias, const float* pos,
                            const int32_t* vis, int vis_rows, const int32_t* lead_ids, T* out, int leads, int samples,
                            int patch, int dim, int t_vis, int t_all, bool vec) {
  const int b = blk.x / leads, lead = blk.x % leads, d0 = blk.y * kDimChunk;
  const int dc = dim - d0 < kDimChunk ? dim - d0 : kDimChunk;  // dims in this chunk
  const int rows = round_up(t_vis, kTile), pp = round_up(patch, kTile), dcp = round_up(dc, kTile);
  const EmbedSmem lay(t_vis, patch, int(sizeof(T)));
  T *sx = reinterpret_cast<T*>(smem + lay.x), *sw = reinterpret_cast<T*>(smem + lay.w);
  float* acc = reinterpret_cast<float*>(smem + lay.acc);
  const T* xrow = x + (int64_t(b) * leads + lead) * samples;

  blk.threads(rows * pp, [&](int i) {  // the visible patches (50 samples: no 16-byte alignment to exploit)
    const int j = i / pp, p = i % pp;
    sx[i] = (j < t_vis && p < patch) ? xrow[int64_t(slot_of(vis, vis_rows, b, t_vis, j)) * patch + p]
                                      : from_float<T>(0.f);
  });
  blk.threads(dcp * pp, [&](int i) {  // W rows d0 .. d0 + dc, zero past them
    const int r = i / pp, p = i % pp;
    sw[i] = (r < dc && p < patch) ? w[int64_t(d0 + r) * patch + p] : from_float<T>(0.f);
  });
  blk.sync();
  const int col_tiles = dcp / kTile;
  blk.warps((rows / kTile) * col_tiles, [&](int job) {
    const int rt = job / col_tiles, ct = job % col_tiles;
    tile_product<T, true>(blk, sx + rt * kTile * pp, pp, sw + ct * kTile * pp, pp, acc + rt * kTile * dcp + ct * kTile,
                          dcp, pp, false);
  });
  blk.sync();
  const int lead_id = lead_ids[lead];
  blk.threads(t_vis * dc, [&](int i) {
    const int j = i / dc, e = i % dc;
    const int slot = slot_of(vis, vis_rows, b, t_vis, j);
    acc[j * dcp + e] += to_float(bias[d0 + e]) + pos[(int64_t(lead_id) * t_all + slot) * dim + d0 + e];
  });
  blk.sync();
  const int64_t first = int64_t(b) * leads * t_vis + int64_t(lead) * t_vis;  // this lead's first token
  Rows<T>::store(blk, out + d0, dim, dc, acc, dcp, t_vis, 1.f, vec, [&](int j) { return first + j; });
}

template <typename T>
ECG_HD void embed_dx_block(Block& blk, char* smem, const T* d_out, const T* w, const int32_t* vis, int vis_rows, T* dx,
                           int leads, int samples, int patch, int dim, int t_vis, bool vec) {
  const int b = blk.x / leads, lead = blk.x % leads;
  const int rows = round_up(t_vis, kTile), pp = round_up(patch, kTile);
  const EmbedSmem lay(t_vis, patch, int(sizeof(T)));
  T *sg = reinterpret_cast<T*>(smem + lay.x), *sw = reinterpret_cast<T*>(smem + lay.w);
  float* acc = reinterpret_cast<float*>(smem + lay.acc);
  const int64_t first = int64_t(b) * leads * t_vis + int64_t(lead) * t_vis;
  blk.threads(rows * pp, [&](int i) { acc[i] = 0.f; });
  for (int d0 = 0; d0 < dim; d0 += kDimChunk) {
    const int dc = dim - d0 < kDimChunk ? dim - d0 : kDimChunk, dcp = round_up(dc, kTile);
    blk.sync();
    Rows<T>::load(blk, sg, dcp, d_out + d0, dim, dc, rows, vec && dc % Rows<T>::kVec == 0,
                  [&](int j) { return j < t_vis ? first + j : int64_t(-1); });
    blk.threads(dcp * pp, [&](int i) {  // W[d0 + r][p], rows past dc zero
      const int r = i / pp, p = i % pp;
      sw[i] = (r < dc && p < patch) ? w[int64_t(d0 + r) * patch + p] : from_float<T>(0.f);
    });
    blk.sync();
    const int col_tiles = pp / kTile;
    blk.warps((rows / kTile) * col_tiles, [&](int job) {  // acc (tokens x samples) += dY chunk · W chunk
      const int rt = job / col_tiles, ct = job % col_tiles;
      tile_product<T, false>(blk, sg + rt * kTile * dcp, dcp, sw + ct * kTile, pp, acc + rt * kTile * pp + ct * kTile,
                             pp, dcp, true);
    });
  }
  blk.sync();
  T* dxrow = dx + (int64_t(b) * leads + lead) * samples;
  blk.threads(t_vis * patch, [&](int i) {
    const int j = i / patch, p = i % patch;
    dxrow[int64_t(slot_of(vis, vis_rows, b, t_vis, j)) * patch + p] = from_float<T>(acc[j * pp + p]);
  });
}

#ifndef ECG_JEPA_HOST_EMULATION
template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
patch_embed_fwd_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                       const float* __restrict__ pos, const int32_t* __restrict__ vis, int vis_rows,
                       const int32_t* __restrict__ lead_ids, T* __restrict__ out, int leads, int samples, int patch,
                       int dim, int t_vis, int t_all, bool vec) {
  extern __shared__ __align__(128) char smem[];
  Block blk;
  embed_fwd_block<T>(blk, smem, x, w, bias, pos, vis, vis_rows, lead_ids, out, leads, samples, patch, dim, t_vis, t_all, vec);
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
patch_embed_dx_kernel(const T* __restrict__ d_out, const T* __restrict__ w, const int32_t* __restrict__ vis, int vis_rows,
                      T* __restrict__ dx, int leads, int samples, int patch, int dim, int t_vis, bool vec) {
  extern __shared__ __align__(128) char smem[];
  Block blk;
  embed_dx_block<T>(blk, smem, d_out, w, vis, vis_rows, dx, leads, samples, patch, dim, t_vis, vec);
}
#endif

}  // namespace

cudaError_t patch_embed_fwd(DType dtype, const void* x, const void* w, const void* bias, const float* pos,
                            const int32_t* vis, int vis_rows, const int32_t* lead_ids, void* out, int batch,
                            int leads, int samples, int patch, int dim, int t_vis, int t_all, cudaStream_t stream) {
  if (batch < 1 || leads < 1 || t_vis < 1 || patch < 1 || dim < 1) return cudaErrorInvalidValue;
  return dispatch(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const EmbedSmem lay(t_vis, patch, int(sizeof(T)));
    const T *xt = static_cast<const T*>(x), *wt = static_cast<const T*>(w), *bt = static_cast<const T*>(bias);
    T* ot = static_cast<T*>(out);
    const bool vec = vectorizable(dim, kDimChunk < dim ? kDimChunk : dim, sizeof(T), {out}) &&
                     (dim % kDimChunk) % Rows<T>::kVec == 0;
    const int chunks = cdiv(dim, kDimChunk);
#ifdef ECG_JEPA_HOST_EMULATION
    (void)stream;
    std::vector<char> smem(lay.total + 128);
    for (int bl = 0; bl < batch * leads; ++bl)
      for (int c = 0; c < chunks; ++c) {
        Block blk{bl, c, 0};
        embed_fwd_block<T>(blk, smem.data(), xt, wt, bt, pos, vis, vis_rows, lead_ids, ot, leads, samples, patch, dim,
                           t_vis, t_all, vec);
      }
    return cudaSuccess;
#else
    cudaError_t err = cudaFuncSetAttribute(patch_embed_fwd_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           int(lay.total));
    if (err != cudaSuccess) return err;
    patch_embed_fwd_kernel<T><<<dim3(unsigned(batch * leads), unsigned(chunks)), kThreads, lay.total, stream>>>(
        xt, wt, bt, pos, vis, vis_rows, lead_ids, ot, leads, samples, patch, dim, t_vis, t_all, vec);
    return cudaGetLastError();
#endif
  });
}

cudaError_t patch_embed_dx(DType dtype, const void* d_out, const void* w, const int32_t* vis, int vis_rows, void* dx,
                           int batch, int leads, int samples, int patch, int dim, int t_vis, cudaStream_t stream) {
  if (batch < 1 || leads < 1 || t_vis < 1 || patch < 1 || dim < 1) return cudaErrorInvalidValue;
  return dispatch(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const EmbedSmem lay(t_vis, patch, int(sizeof(T)));
    const T *gt = static_cast<const T*>(d_out), *wt = static_cast<const T*>(w);
    T* dxt = static_cast<T*>(dx);
    const bool vec = vectorizable(dim, Rows<T>::kVec, sizeof(T), {d_out});
#ifdef ECG_JEPA_HOST_EMULATION
    (void)stream;
    std::vector<char> smem(lay.total + 128);
    for (int bl = 0; bl < batch * leads; ++bl) {
      Block blk{bl, 0, 0};
      embed_dx_block<T>(blk, smem.data(), gt, wt, vis, vis_rows, dxt, leads, samples, patch, dim, t_vis, vec);
    }
    return cudaSuccess;
#else
    cudaError_t err = cudaFuncSetAttribute(patch_embed_dx_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           int(lay.total));
    if (err != cudaSuccess) return err;
    patch_embed_dx_kernel<T><<<unsigned(batch * leads), kThreads, lay.total, stream>>>(
        gt, wt, vis, vis_rows, dxt, leads, samples, patch, dim, t_vis, vec);
    return cudaGetLastError();
#endif
  });
}

}  // namespace ecg_jepa
