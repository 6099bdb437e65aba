// The warp-level layer of the ecg-jepa CUDA kernels: tensor-core fragments (mma.sync m16n8k16, fp32
// accumulation), ldmatrix (x4, and .trans), the shuffles of an online softmax (quad reductions, a
// broadcast), 16-byte cp.async copies and the CTA barrier, written so that one kernel source runs on the
// GPU and on the CPU.
//
// On the GPU each call is its PTX instruction (inline asm). In ECG_JEPA_HOST_EMULATION a CTA runs as its
// threads, each a fiber (ucontext) of the same kernel code, switched at the collective calls: a collective
// gathers the inputs of all the lanes of its warp (of all threads, for the barrier), the last lane to arrive
// computes every lane's result with the PTX ISA's fragment layouts (section "Matrix Fragments for
// mma.m16n8k16 with floating point type", and ldmatrix's), and each lane resumes with its own. A fragment
// layout the kernel gets wrong therefore gives wrong numbers on the CPU too (tests/test_cropa.py), and
// fragment_fault() breaks the emulated ldmatrix on purpose to show that the tests see it.
//
// Fragment layouts, for lane l, g = l / 4, c = l % 4 (16-bit pairs packed low element first):
//   A (16 x 16, row-major) a[0] = A[g][2c, 2c+1]  a[1] = A[g+8][2c, 2c+1]  a[2] = A[g][2c+8, +9]  a[3] = A[g+8][2c+8, +9]
//   B (16 x 8, k x n)      b[0] = B[2c, 2c+1][g]  b[1] = B[2c+8, 2c+9][g]
//   C (16 x 8, fp32)       c[0], c[1] = C[g][2c, 2c+1]  c[2], c[3] = C[g+8][2c, 2c+1]
//   ldmatrix.x4: lane 8j + i gives the address of row i of matrix j; r[j] = M_j[g][2c, 2c+1]
//   (.trans: r[j] = M_j[2c][g], M_j[2c+1][g]).
#pragma once
#include "block.cuh"

#ifdef ECG_JEPA_HOST_EMULATION
#include <ucontext.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#endif

namespace ecg_jepa {

// Two 16-bit values of T packed in a word, lo at the low half; and their values back.
template <typename T>
ECG_HD uint32_t pack2(float lo, float hi) {
  return bits_of(from_float<T>(lo)) | (bits_of(from_float<T>(hi)) << 16);
}
template <typename T>
ECG_HD float lo_of(uint32_t w) { return value_of(T{}, w & 0xffffu); }
template <typename T>
ECG_HD float hi_of(uint32_t w) { return value_of(T{}, w >> 16); }

#ifdef ECG_JEPA_HOST_EMULATION
// ---------------------------------------------------------------------------------------------------
// The CPU: a CTA's threads as fibers.
namespace host {

struct Exchange {  // one collective's inputs and results, a slot per participant
  using Slot = std::array<unsigned char, 64>;
  int arrived = 0;
  unsigned long generation = 0;
  std::vector<Slot> in, out;
  explicit Exchange(int n = 32) : in(n), out(n) {}
};

struct Cta {
  static constexpr size_t kStack = 256 * 1024;
  int threads = 0, current = 0;
  unsigned long progress = 0;
  std::vector<ucontext_t> ctx;
  ucontext_t scheduler;
  std::vector<std::unique_ptr<char[]>> stacks;
  std::vector<char> done;
  std::vector<Exchange> warps;
  Exchange block;
  std::function<void(int)> body;
};

inline Cta*& running() {
  static thread_local Cta* cta = nullptr;
  return cta;
}

inline void fiber_main() {
  Cta* c = running();
  const int tid = c->current;
  c->body(tid);
  c->done[tid] = 1;
  ++c->progress;
}

// Runs body(tid) for every tid < threads, switching fibers round-robin at collectives; aborts on a
// collective that not every participant reaches (a sweep over the fibers without progress).
inline void run_cta(Cta& c, int threads, std::function<void(int)> body) {
  c.threads = threads;
  c.body = std::move(body);
  c.ctx.resize(threads);
  while (int(c.stacks.size()) < threads) c.stacks.emplace_back(new char[Cta::kStack]);
  c.done.assign(threads, 0);
  c.warps.assign((threads + 31) / 32, Exchange(32));
  c.block = Exchange(threads);
  for (int t = 0; t < threads; ++t) {
    getcontext(&c.ctx[t]);
    c.ctx[t].uc_stack.ss_sp = c.stacks[t].get();
    c.ctx[t].uc_stack.ss_size = Cta::kStack;
    c.ctx[t].uc_link = &c.scheduler;
    makecontext(&c.ctx[t], fiber_main, 0);
  }
  Cta* outer = running();
  running() = &c;
  for (int left = threads; left > 0;) {
    const unsigned long before = c.progress;
    for (int t = 0; t < threads; ++t) {
      if (c.done[t]) continue;
      c.current = t;
      swapcontext(&c.scheduler, &c.ctx[t]);
      left -= c.done[t];
    }
    if (c.progress == before && left > 0) {
      std::fprintf(stderr, "ecg_jepa emulation: a collective was not reached by every thread (deadlock)\n");
      std::abort();
    }
  }
  running() = outer;
}

inline int lane() { return running()->current & 31; }

// The calling thread's part of a collective over n participants of x (slot `me`): stores its input, waits
// for all, the last one runs compute(in[n], out[n]); returns its own result.
template <typename Out, typename In, typename F>
Out collective(Exchange& x, int n, int me, const In& mine, F&& compute) {
  static_assert(sizeof(In) <= 64 && sizeof(Out) <= 64, "collective payload over 64 bytes");
  Cta* c = running();
  std::memcpy(x.in[me].data(), &mine, sizeof(In));
  ++c->progress;
  const unsigned long generation = x.generation;
  if (++x.arrived == n) {
    std::vector<In> in(n);
    std::vector<Out> out(n);
    for (int i = 0; i < n; ++i) std::memcpy(&in[i], x.in[i].data(), sizeof(In));
    compute(in.data(), out.data());
    for (int i = 0; i < n; ++i) std::memcpy(x.out[i].data(), &out[i], sizeof(Out));
    x.arrived = 0;
    ++x.generation;
  } else {
    while (x.generation == generation) swapcontext(&c->ctx[c->current], &c->scheduler);
  }
  Out r;
  std::memcpy(&r, x.out[me].data(), sizeof(Out));
  return r;
}

template <typename Out, typename In, typename F>
Out warp_collective(const In& mine, F&& compute) {
  Cta* c = running();
  return collective<Out>(c->warps[c->current / 32], 32, c->current % 32, mine, compute);
}

}  // namespace host

// Test hook: when nonzero, the emulated ldmatrix hands lanes 0 and 5 each other's registers.
inline int& fragment_fault() {
  static int fault = 0;
  return fault;
}

struct Words4 { uint32_t r[4]; };

inline void cta_sync() {
  struct None {};
  host::Cta* c = host::running();
  host::collective<None>(c->block, c->threads, c->current, None{}, [](const None*, None*) {});
}

// D = A·B + C on a warp's fragments, T the 16-bit input type.
template <typename T>
inline void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  struct In { uint32_t a[4], b[2]; float c[4]; };
  struct Out { float d[4]; };
  In mine{{a[0], a[1], a[2], a[3]}, {b0, b1}, {d[0], d[1], d[2], d[3]}};
  const Out r = host::warp_collective<Out>(mine, [](const In* in, Out* out) {
    float A[16][16], B[16][8], C[16][8];
    for (int l = 0; l < 32; ++l) {
      const int g = l / 4, c = l % 4;
      for (int e = 0; e < 2; ++e) {
        const auto half = [&](uint32_t w) { return e ? hi_of<T>(w) : lo_of<T>(w); };
        A[g][2 * c + e] = half(in[l].a[0]);
        A[g + 8][2 * c + e] = half(in[l].a[1]);
        A[g][2 * c + 8 + e] = half(in[l].a[2]);
        A[g + 8][2 * c + 8 + e] = half(in[l].a[3]);
        B[2 * c + e][g] = half(in[l].b[0]);
        B[2 * c + 8 + e][g] = half(in[l].b[1]);
        C[g][2 * c + e] = in[l].c[e];
        C[g + 8][2 * c + e] = in[l].c[2 + e];
      }
    }
    for (int l = 0; l < 32; ++l) {
      const int g = l / 4, c = l % 4;
      for (int i = 0; i < 4; ++i) {
        const int row = g + (i / 2) * 8, col = 2 * c + i % 2;
        float s = C[row][col];
        for (int k = 0; k < 16; ++k) s += A[row][k] * B[k][col];
        out[l].d[i] = s;
      }
    }
  });
  for (int i = 0; i < 4; ++i) d[i] = r.d[i];
}

// Four 8x8 matrices of 16-bit elements from shared memory; this lane gives the address of one row.
template <bool kTrans>
inline void ldmatrix_x4_impl(uint32_t (&r)[4], const void* row) {
  const Words4 got = host::warp_collective<Words4>(row, [](const void* const* rows, Words4* out) {
    for (int l = 0; l < 32; ++l) {
      const int g = l / 4, c = l % 4;
      for (int j = 0; j < 4; ++j) {
        uint16_t x0, x1;
        if (kTrans) {
          std::memcpy(&x0, static_cast<const char*>(rows[8 * j + 2 * c]) + 2 * g, 2);
          std::memcpy(&x1, static_cast<const char*>(rows[8 * j + 2 * c + 1]) + 2 * g, 2);
        } else {
          std::memcpy(&x0, static_cast<const char*>(rows[8 * j + g]) + 4 * c, 2);
          std::memcpy(&x1, static_cast<const char*>(rows[8 * j + g]) + 4 * c + 2, 2);
        }
        out[l].r[j] = uint32_t(x0) | (uint32_t(x1) << 16);
      }
    }
    if (fragment_fault()) std::swap(out[0], out[5]);
  });
  for (int j = 0; j < 4; ++j) r[j] = got.r[j];
}
inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) { ldmatrix_x4_impl<false>(r, row); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) { ldmatrix_x4_impl<true>(r, row); }

// The value of lane (this lane ^ mask).
inline float shfl_xor(float v, int mask) {
  struct Out { float v; };
  return host::warp_collective<Out>(v, [mask](const float* in, Out* out) {
    for (int l = 0; l < 32; ++l) out[l].v = in[l ^ mask];
  }).v;
}

// The value of lane src (each lane names its own).
inline float shfl_idx(float v, int src) {
  struct In { float v; int src; };
  struct Out { float v; };
  return host::warp_collective<Out>(In{v, src}, [](const In* in, Out* out) {
    for (int l = 0; l < 32; ++l) out[l].v = in[in[l].src].v;
  }).v;
}

// 16 bytes from global to shared memory, the last 16 - bytes of them zero; completed by cp_async_wait_all.
inline void cp_async16(void* dst, const void* src, int bytes) {
  std::memset(dst, 0, 16);
  if (bytes) std::memcpy(dst, src, size_t(bytes));
}
inline void cp_async_wait_all() {}

inline float fast_exp2(float x) { return std::exp2(x); }
inline float fast_log2(float x) { return std::log2(x); }

#else
// ---------------------------------------------------------------------------------------------------
// The GPU: PTX.
__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cta_sync() { __syncthreads(); }

template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, BFloat>) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(row)));
}

__device__ __forceinline__ float shfl_xor(float v, int mask) { return __shfl_xor_sync(0xffffffffu, v, mask); }
__device__ __forceinline__ float shfl_idx(float v, int src) { return __shfl_sync(0xffffffffu, v, src); }

__device__ __forceinline__ void cp_async16(void* dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_address(dst)), "l"(src), "r"(bytes) : "memory");  // wide side
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;" ::: "memory"); }

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float fast_log2(float x) { return __log2f(x); }
#endif

}  // namespace ecg_jepa
