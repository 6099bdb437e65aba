// Launchers of the ecg-jepa CUDA kernels: raw device pointers, sizes and a stream; no torch.
//
// Attention: q, k, v, o, do, dq, dk, dv are contiguous (BH, N, d) with N = L*T lead-major (token = lead*T +
// slot); lse and delta are (BH, N) float. Patch embedding: x (B, L, S) with S = T_all*P, w (D, P), bias (D),
// pos (rows, D) float, vis (vis_rows, Tv) int32 slot ids ascending (vis_rows 1 or B), lead_ids (L) int32,
// out (B, L*Tv, D); all contiguous.
//
// Built with nvcc for the GPU, or as plain C++ with ECG_JEPA_HOST_EMULATION (the kernels' logic on the CPU,
// for tests; see block.cuh), where the launchers run every CTA in turn on host memory.
#pragma once
#include <cstddef>
#include <cstdint>

#ifdef ECG_JEPA_HOST_EMULATION
using cudaError_t = int;
using cudaStream_t = void*;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorInvalidValue = 1;
#else
#include <cuda_runtime.h>
#endif

#if !defined(ECG_JEPA_MAX_HEAD_DIM)
#error "build with -DECG_JEPA_MAX_HEAD_DIM=... (ecg_jepa.build_ext.defines passes ecg_jepa/limits.py)"
#endif

namespace ecg_jepa {

enum class DType : int { F32 = 0, F16 = 1, BF16 = 2 };

constexpr int kMaxHeadDim = ECG_JEPA_MAX_HEAD_DIM;

// How the attention kernels use a GPU allowing ``smem_limit`` bytes of shared memory per CTA: the forward's
// shared memory (one CTA per batch·head holding the head's keys and values; 0: does not fit, or float32,
// which the tensor-core kernels do not take), the backward's leads per CTA (all of them: one CTA per
// batch·head holding two of its matrices and its LSE and Delta; 0: does not fit, or float32) and its shared
// memory. Mirrored in Python by ecg_jepa.ops.cropa.cuda.plan (a test compares them).
struct AttentionPlan {
  size_t fwd_smem;
  int bwd_group;
  size_t bwd_smem;
};
AttentionPlan attention_plan(DType dtype, int leads, int slots, int head_dim, size_t smem_limit);

// float16 / bfloat16 only (tensor cores).
cudaError_t cropa_attention_fwd(DType dtype, const void* q, const void* k, const void* v, void* o, float* lse,
                                int64_t bh, int leads, int slots, int head_dim, float scale, size_t smem_limit,
                                cudaStream_t stream);

// dq, dk, dv from the forward's O and natural-log LSE (one kernel; Delta = rowsum(dO * O) computed in it; no
// atomics). float16 / bfloat16 only.
cudaError_t cropa_attention_bwd(DType dtype, const void* q, const void* k, const void* v, const void* o,
                                const void* d_out, const float* lse, void* dq, void* dk, void* dv, int64_t bh,
                                int leads, int slots, int head_dim, float scale, size_t smem_limit, cudaStream_t stream);

cudaError_t patch_embed_fwd(DType dtype, const void* x, const void* w, const void* bias, const float* pos,
                            const int32_t* vis, int vis_rows, const int32_t* lead_ids, void* out, int batch,
                            int leads, int samples, int patch, int dim, int t_vis, int t_all, cudaStream_t stream);

// dx must be zeroed by the caller: hidden slots get no gradient.
cudaError_t patch_embed_dx(DType dtype, const void* d_out, const void* w, const int32_t* vis, int vis_rows,
                           void* dx, int batch, int leads, int samples, int patch, int dim, int t_vis,
                           cudaStream_t stream);

}  // namespace ecg_jepa
