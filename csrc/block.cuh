// The block-synchronous model the patch-embedding kernels are written in, and what all the ecg-jepa CUDA
// kernels share (the attention kernels are warp-level: warp.cuh).
//
// A kernel body is a sequence of phases separated by Block::sync(). In a phase, Block::threads(n, f) runs
// f(i) for every work item i < n, spread over the CTA's threads, and Block::warps(n, f) runs f(i) once per
// item on one whole warp (tensor-core tile products). Items of one phase never read what another item of
// the same phase writes, and everything that lives across phases is in shared memory. So the same source
// also runs on the CPU (ECG_JEPA_HOST_EMULATION): there a phase is a loop over its items and sync() does
// nothing, which gives the same result; the tests check the kernels' logic that way on machines with no
// GPU (tests/test_patch_embed.py), and on a GPU against the same oracle.
//
// Also here: the storage types (fp32, fp16, bf16) and their conversions, 16x16 tile products (WMMA tensor
// cores on the GPU for 16-bit data, fp32 multiply-adds otherwise), and row copies between global and shared
// memory, 16 bytes at a time where alignment allows.
#pragma once
#include <cstdint>
#include <cstring>
#include <initializer_list>

#include "ecg_jepa_kernels.h"

#include <type_traits>

#ifdef ECG_JEPA_HOST_EMULATION
#include <cmath>
#include <vector>
#define ECG_HD inline
#define ECG_HOST_DEVICE inline
struct uint4 { uint32_t x, y, z, w; };
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#define ECG_HD __device__ __forceinline__
#define ECG_HOST_DEVICE __host__ __device__ __forceinline__
#endif

namespace ecg_jepa {

constexpr int kTile = 16;      // slots per block, and the side of every tensor-core tile
constexpr int kThreads = 128;  // threads per CTA (4 warps)

ECG_HOST_DEVICE int round_up(int x, int m) { return (x + m - 1) / m * m; }
ECG_HOST_DEVICE int cdiv(int x, int m) { return (x + m - 1) / m; }

// ---------------------------------------------------------------------------------------------------
// Storage types.
#ifdef ECG_JEPA_HOST_EMULATION
struct Half { uint16_t bits; };    // IEEE binary16
struct BFloat { uint16_t bits; };  // bfloat16

inline float to_float(float x) { return x; }
inline float to_float(Half x) {
  _Float16 h;
  std::memcpy(&h, &x.bits, 2);
  return static_cast<float>(h);
}
inline float to_float(BFloat x) {
  const uint32_t u = uint32_t(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
template <typename T> T from_float(float x);
template <> inline float from_float<float>(float x) { return x; }
template <> inline Half from_float<Half>(float x) {
  const _Float16 h = static_cast<_Float16>(x);  // round to nearest even
  Half out;
  std::memcpy(&out.bits, &h, 2);
  return out;
}
template <> inline BFloat from_float<BFloat>(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return BFloat{uint16_t((u >> 16) | 0x40)};  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                                 // round to nearest even
  return BFloat{uint16_t(u >> 16)};
}
#else
using Half = __half;
using BFloat = __nv_bfloat16;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(Half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(BFloat x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ Half from_float<Half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ BFloat from_float<BFloat>(float x) { return __float2bfloat16_rn(x); }
#endif

// Calls f(T{}) with T the storage type of dtype.
template <typename F>
cudaError_t dispatch(DType dtype, F&& f) {
  switch (dtype) {
    case DType::F32: return f(float{});
    case DType::F16: return f(Half{});
    case DType::BF16: return f(BFloat{});
  }
  return cudaErrorInvalidValue;
}

// ---------------------------------------------------------------------------------------------------
// The CTA: phases of thread items and warp items.
struct Block {
  int x, y, z;  // blockIdx
#ifdef ECG_JEPA_HOST_EMULATION
  template <typename F> void threads(int n, F&& f) { for (int i = 0; i < n; ++i) f(i); }
  template <typename F> void warps(int n, F&& f) { for (int i = 0; i < n; ++i) f(i); }
  void sync() {}
  int lane() const { return 0; }
  static constexpr int kLanes = 1;  // a warp item runs once, as a whole
#else
  __device__ Block() : x(blockIdx.x), y(blockIdx.y), z(blockIdx.z) {}
  template <typename F> __device__ void threads(int n, F&& f) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) f(i);
  }
  template <typename F> __device__ void warps(int n, F&& f) {
    for (int i = threadIdx.x / 32; i < n; i += blockDim.x / 32) f(i);
  }
  __device__ void sync() { __syncthreads(); }
  __device__ int lane() const { return threadIdx.x % 32; }
  static constexpr int kLanes = 32;
#endif
};

// ---------------------------------------------------------------------------------------------------
// 16x16 tile products, run by one warp item: C (fp32, row-major, ldc) = [C +] A · B, A (16 x k) row-major
// (lda), B (k x 16) row-major (ldb) or, with kBTransposed, B = Mᵀ for a row-major M (16 x k, ldb).
// k is a multiple of 16; pointers and leading dimensions meet WMMA's alignment (32-byte tiles, ld a
// multiple of 16 elements).
template <typename T, bool kBTransposed>
ECG_HD void tile_product_fma(const Block& blk, const T* a, int lda, const T* b, int ldb, float* c, int ldc, int k,
                             bool accumulate) {
  // fp32 (and the CPU emulation): each lane computes its share of the 256 outputs.
  for (int e = blk.lane(); e < kTile * kTile; e += Block::kLanes) {
    const int row = e / kTile, col = e % kTile;
    float sum = accumulate ? c[row * ldc + col] : 0.f;
    for (int j = 0; j < k; ++j) {
      const float bv = kBTransposed ? to_float(b[col * ldb + j]) : to_float(b[int64_t(j) * ldb + col]);
      sum += to_float(a[row * lda + j]) * bv;
    }
    c[row * ldc + col] = sum;
  }
}

template <typename T, bool kBTransposed>
ECG_HD void tile_product(const Block& blk, const T* a, int lda, const T* b, int ldb, float* c, int ldc, int k,
                         bool accumulate) {
#ifndef ECG_JEPA_HOST_EMULATION
  if constexpr (!std::is_same_v<T, float>) {  // 16-bit data: tensor cores
    using namespace nvcuda;
    using BLayout = std::conditional_t<kBTransposed, wmma::col_major, wmma::row_major>;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    if (accumulate) {
      wmma::load_matrix_sync(acc, c, ldc, wmma::mem_row_major);
    } else {
      wmma::fill_fragment(acc, 0.0f);
    }
    for (int k0 = 0; k0 < k; k0 += kTile) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, BLayout> fb;
      wmma::load_matrix_sync(fa, a + k0, lda);
      wmma::load_matrix_sync(fb, kBTransposed ? b + k0 : b + int64_t(k0) * ldb, ldb);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(c, acc, ldc, wmma::mem_row_major);
  } else {
    tile_product_fma<T, kBTransposed>(blk, a, lda, b, ldb, c, ldc, k, accumulate);
  }
#else
  tile_product_fma<T, kBTransposed>(blk, a, lda, b, ldb, c, ldc, k, accumulate);
#endif
}

// The storage bits of one value of T (float, Half, BFloat), zero-extended to 32 bits, and the value (as a
// float) of such bits: the words pack16 and unpack16 assemble and split.
template <typename T>
using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint16_t>;

template <typename T>
ECG_HD uint32_t bits_of(T x) {
  Bits<T> u;
  memcpy(&u, &x, sizeof(T));
  return u;
}
template <typename T>
ECG_HD float value_of(T, uint32_t bits) {
  const Bits<T> u = Bits<T>(bits);
  T x;
  memcpy(&x, &u, sizeof(T));
  return to_float(x);
}

// The 16 / sizeof(T) values of 16 bytes of T, as floats, element 0 from the lowest address.
template <typename T>
ECG_HD void unpack16(uint4 v, float* out) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
  if constexpr (sizeof(T) == 4) {
    for (int j = 0; j < 4; ++j) out[j] = value_of(T{}, w[j]);
  } else {
    for (int j = 0; j < 4; ++j) {
      out[2 * j] = value_of(T{}, w[j] & 0xffffu);
      out[2 * j + 1] = value_of(T{}, w[j] >> 16);
    }
  }
}

// 16 bytes of T from 16 / sizeof(T) floats (times scale), element 0 at the lowest address.
template <typename T>
ECG_HD uint4 pack16(const float* src, float scale) {
  uint32_t w[4];
  if constexpr (sizeof(T) == 4) {
    for (int j = 0; j < 4; ++j) w[j] = bits_of(from_float<T>(src[j] * scale));
  } else {
    for (int j = 0; j < 4; ++j)
      w[j] = bits_of(from_float<T>(src[2 * j] * scale)) | (bits_of(from_float<T>(src[2 * j + 1] * scale)) << 16);
  }
  return uint4{w[0], w[1], w[2], w[3]};
}

// ---------------------------------------------------------------------------------------------------
// Row copies between global rows (a row's first element at row·ld, ``width`` elements taken) and shared
// tiles of rows padded to ``sp`` ≥ width elements (padding and absent rows are zero). ``vec``: every row
// start is 16-byte aligned and width is a multiple of 16 bytes, so 16 bytes move per access.
template <typename T>
struct Rows {
  static constexpr int kVec = 16 / int(sizeof(T));  // elements per 16-byte access

  // dst[r][e] = src[row_of(r)·ld + e] (e < width), zero for row_of(r) < 0, for r < n_rows.
  template <typename RowOf>
  ECG_HD static void load(Block& blk, T* dst, int sp, const T* src, int64_t ld, int width, int n_rows, bool vec,
                          RowOf row_of) {
    if (vec) {
      const int per_row = sp / kVec;
      blk.threads(n_rows * per_row, [&](int i) {
        const int r = i / per_row, e = (i % per_row) * kVec;
        const int64_t row = row_of(r);
        uint4 v = {0u, 0u, 0u, 0u};
        if (row >= 0 && e < width) v = *reinterpret_cast<const uint4*>(src + row * ld + e);  // wide side
        *reinterpret_cast<uint4*>(dst + r * sp + e) = v;
      });
    } else {
      blk.threads(n_rows * sp, [&](int i) {
        const int r = i / sp, e = i % sp;
        const int64_t row = row_of(r);
        dst[r * sp + e] = (row >= 0 && e < width) ? src[row * ld + e] : from_float<T>(0.f);
      });
    }
  }

  // dst[row_of(r)·ld + e] = src[r][e] · scale converted to T (e < width), for rows with row_of(r) ≥ 0.
  template <typename RowOf>
  ECG_HD static void store(Block& blk, T* dst, int64_t ld, int width, const float* src, int sp, int n_rows, float scale,
                           bool vec, RowOf row_of) {
    if (vec) {
      const int per_row = width / kVec;
      blk.threads(n_rows * per_row, [&](int i) {
        const int r = i / per_row, e = (i % per_row) * kVec;
        const int64_t row = row_of(r);
        if (row < 0) return;
        *reinterpret_cast<uint4*>(dst + row * ld + e) = pack16<T>(src + r * sp + e, scale);  // wide side
      });
    } else {
      blk.threads(n_rows * width, [&](int i) {
        const int r = i / width, e = i % width;
        const int64_t row = row_of(r);
        if (row >= 0) dst[row * ld + e] = from_float<T>(src[r * sp + e] * scale);
      });
    }
  }
};

// Whether rows of ``width`` elements of T starting every ``ld`` elements at 16-byte-aligned bases move
// 16 bytes at a time.
inline bool vectorizable(int64_t ld, int width, size_t ts, std::initializer_list<const void*> bases) {
  if ((size_t(ld) * ts) % 16 != 0 || (size_t(width) * ts) % 16 != 0) return false;
  for (const void* p : bases)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

// The dot product of two d-long rows of global memory, 16 bytes at a time when ``vec``.
template <typename T>
ECG_HD float dot_global(const T* a, const T* b, int d, bool vec) {
  constexpr int kVec = 16 / int(sizeof(T));
  if (!vec) {
    float s = 0.f;
    for (int e = 0; e < d; ++e) s += to_float(a[e]) * to_float(b[e]);
    return s;
  }
  float s = 0.f, x[kVec], y[kVec];
  for (int e = 0; e < d; e += kVec) {
    unpack16<T>(*reinterpret_cast<const uint4*>(a + e), x);  // wide side
    unpack16<T>(*reinterpret_cast<const uint4*>(b + e), y);  // wide side
    for (int j = 0; j < kVec; ++j) s += x[j] * y[j];
  }
  return s;
}

// Shared-memory carving: consecutive regions, each 128-byte aligned (WMMA tiles want 32).
struct Carve {
  size_t used = 0;
  ECG_HOST_DEVICE size_t take(size_t bytes) {
    const size_t at = used;
    used = (used + bytes + 127) / 128 * 128;
    return at;
  }
};

}  // namespace ecg_jepa
