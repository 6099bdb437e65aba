// CroPA attention, forward and backward: one warp per query (forward, dQ) or per key (dK, dV).
//
// Each query (l, t) meets the T keys of its own lead (row part) and the L - 1 keys (m, t), m != l, of its
// own slot (column part) under one online softmax, so the N x N score matrix never exists. Head vectors
// are split across the 32 lanes (lane i holds elements i, i+32, ...: coalesced loads along d), dot
// products are warp reductions, everything accumulates in fp32. Keys and values shared by the queries of
// a lead are re-read from L2. The backward uses the merged statistics of the forward: P = exp(S - LSE)
// and delta = rowsum(dO * O) of the merged output, for both parts (FlashAttention's backward per branch).
#include <cmath>

#include "dtype.cuh"

namespace ecg_jepa {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kPerLane = kMaxHeadDim / 32;

template <typename T>
__device__ __forceinline__ void load_row(const T* row, int lane, int d, float (&out)[kPerLane], float mul = 1.f) {
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int idx = i * 32 + lane;
    out[i] = idx < d ? to_float(row[idx]) * mul : 0.f;
  }
}

template <typename T>
__device__ __forceinline__ float dot_row(const float (&a)[kPerLane], const T* row, int lane, int d) {
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int idx = i * 32 + lane;
    if (idx < d) s += a[i] * to_float(row[idx]);
  }
  return warp_sum(s);
}

template <typename T>
__device__ __forceinline__ void axpy_row(float (&acc)[kPerLane], float alpha, float p, const T* row, int lane, int d) {
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int idx = i * 32 + lane;
    acc[i] = acc[i] * alpha + (idx < d ? p * to_float(row[idx]) : 0.f);
  }
}

template <typename T>
__device__ __forceinline__ void store_row(T* row, const float (&x)[kPerLane], float mul, int lane, int d) {
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int idx = i * 32 + lane;
    if (idx < d) row[idx] = from_float<T>(x[i] * mul);
  }
}

// This warp's row (a query or key token of some batch x head) and where it sits.
struct Token {
  int64_t row;    // index over all B*H*N tokens
  int64_t first;  // row of token 0 of the same (batch, head)
  int lead, slot, lane;
};

__device__ __forceinline__ bool this_token(int64_t rows, int leads, int slots, Token& t) {
  t.row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  t.lane = threadIdx.x % 32;
  if (t.row >= rows) return false;
  const int tok = int(t.row % (int64_t(leads) * slots));
  t.first = t.row - tok;
  t.lead = tok / slots;
  t.slot = tok % slots;
  return true;
}

// Calls visit(token) for every key token query (lead, slot) attends: its lead's row, then its slot's column.
template <typename F>
__device__ __forceinline__ void for_each_partner(int lead, int slot, int leads, int slots, F&& visit) {
  for (int s = 0; s < slots; ++s) visit(lead * slots + s);
  for (int m = 0; m < leads; ++m)
    if (m != lead) visit(m * slots + slot);
}

template <typename T>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
cropa_fwd_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ o,
                 float* __restrict__ lse, int64_t rows, int leads, int slots, int d, float scale) {
  Token t;
  if (!this_token(rows, leads, slots, t)) return;
  const int64_t row = t.row, base = t.first * d;
  const int lane = t.lane;
  float qs[kPerLane], acc[kPerLane];
  load_row(q + row * d, lane, d, qs, scale);
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) acc[i] = 0.f;
  float m_run = -INFINITY, l_run = 0.f;
  // The row part comes first and always holds the query's own key, so m_run is finite after one visit.
  for_each_partner(t.lead, t.slot, leads, slots, [&](int key) {
    const float s = dot_row(qs, k + base + int64_t(key) * d, lane, d);
    const float m_new = fmaxf(m_run, s);
    const float alpha = __expf(m_run - m_new);
    const float p = __expf(s - m_new);
    l_run = l_run * alpha + p;
    axpy_row(acc, alpha, p, v + base + int64_t(key) * d, lane, d);
    m_run = m_new;
  });
  store_row(o + row * d, acc, 1.f / l_run, lane, d);
  if (lane == 0) lse[row] = m_run + logf(l_run);
}

template <typename T>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
cropa_bwd_dq_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                    const T* __restrict__ o, const T* __restrict__ d_out, const float* __restrict__ lse,
                    float* __restrict__ delta, T* __restrict__ dq, int64_t rows, int leads, int slots, int d,
                    float scale) {
  Token t;
  if (!this_token(rows, leads, slots, t)) return;
  const int64_t row = t.row, base = t.first * d;
  const int lane = t.lane;
  float qs[kPerLane], dos[kPerLane], os[kPerLane], acc[kPerLane];
  load_row(q + row * d, lane, d, qs, scale);
  load_row(d_out + row * d, lane, d, dos);
  load_row(o + row * d, lane, d, os);
  float dl = 0.f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    dl += dos[i] * os[i];
    acc[i] = 0.f;
  }
  dl = warp_sum(dl);
  if (lane == 0) delta[row] = dl;
  const float lse_row = lse[row];
  for_each_partner(t.lead, t.slot, leads, slots, [&](int key) {
    const float p = __expf(dot_row(qs, k + base + int64_t(key) * d, lane, d) - lse_row);
    const float ds = p * (dot_row(dos, v + base + int64_t(key) * d, lane, d) - dl);
    axpy_row(acc, 1.f, ds, k + base + int64_t(key) * d, lane, d);
  });
  store_row(dq + row * d, acc, scale, lane, d);
}

template <typename T>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
cropa_bwd_dkdv_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                      const T* __restrict__ d_out, const float* __restrict__ lse, const float* __restrict__ delta,
                      T* __restrict__ dk, T* __restrict__ dv, int64_t rows, int leads, int slots, int d,
                      float scale) {
  Token t;
  if (!this_token(rows, leads, slots, t)) return;
  const int64_t row = t.row, base = t.first * d, stat = t.first;
  const int lane = t.lane;
  float ks[kPerLane], vs[kPerLane], dks[kPerLane], dvs[kPerLane];
  load_row(k + row * d, lane, d, ks, scale);
  load_row(v + row * d, lane, d, vs);
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) dks[i] = dvs[i] = 0.f;
  // The queries that attend key (lead, slot) are exactly the keys query (lead, slot) attends.
  for_each_partner(t.lead, t.slot, leads, slots, [&](int query) {
    const T* q_row = q + base + int64_t(query) * d;
    const T* do_row = d_out + base + int64_t(query) * d;
    const float p = __expf(dot_row(ks, q_row, lane, d) - lse[stat + query]);
    const float ds = p * (dot_row(vs, do_row, lane, d) - delta[stat + query]);
    axpy_row(dvs, 1.f, p, do_row, lane, d);
    axpy_row(dks, 1.f, ds, q_row, lane, d);
  });
  store_row(dk + row * d, dks, scale, lane, d);
  store_row(dv + row * d, dvs, 1.f, lane, d);
}

unsigned blocks_for(int64_t rows) { return unsigned((rows + kWarpsPerBlock - 1) / kWarpsPerBlock); }

}  // namespace

cudaError_t cropa_attention_fwd(DType dtype, const void* q, const void* k, const void* v, void* o, float* lse,
                                int64_t bh, int leads, int slots, int head_dim, float scale, cudaStream_t stream) {
  if (head_dim < 1 || head_dim > kMaxHeadDim || leads < 1 || slots < 1) return cudaErrorInvalidValue;
  const int64_t rows = bh * leads * slots;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    cropa_fwd_kernel<T><<<blocks_for(rows), kWarpsPerBlock * 32, 0, stream>>>(
        static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v), static_cast<T*>(o), lse,
        rows, leads, slots, head_dim, scale);
    return cudaGetLastError();
  });
}

cudaError_t cropa_attention_bwd(DType dtype, const void* q, const void* k, const void* v, const void* o,
                                const void* d_out, const float* lse, float* delta, void* dq, void* dk, void* dv,
                                int64_t bh, int leads, int slots, int head_dim, float scale, cudaStream_t stream) {
  if (head_dim < 1 || head_dim > kMaxHeadDim || leads < 1 || slots < 1) return cudaErrorInvalidValue;
  const int64_t rows = bh * leads * slots;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T *qt = static_cast<const T*>(q), *kt = static_cast<const T*>(k), *vt = static_cast<const T*>(v);
    cropa_bwd_dq_kernel<T><<<blocks_for(rows), kWarpsPerBlock * 32, 0, stream>>>(
        qt, kt, vt, static_cast<const T*>(o), static_cast<const T*>(d_out), lse, delta, static_cast<T*>(dq), rows,
        leads, slots, head_dim, scale);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    cropa_bwd_dkdv_kernel<T><<<blocks_for(rows), kWarpsPerBlock * 32, 0, stream>>>(
        qt, kt, vt, static_cast<const T*>(d_out), lse, delta, static_cast<T*>(dk), static_cast<T*>(dv), rows, leads,
        slots, head_dim, scale);
    return cudaGetLastError();
  });
}

}  // namespace ecg_jepa
