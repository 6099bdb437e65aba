// Launchers of the ecg-jepa CUDA kernels: raw device pointers, sizes and a stream; no torch.
// Tensors are contiguous. Attention: q, k, v, o, do, dq, dk, dv are (BH, N, D) with N = L*T lead-major
// (token = lead*T + slot); lse and delta are (BH, N) float. Patch embedding: x (B, L, S) with S = T_all*P,
// w (D, P), bias (D), pos (rows, D) float, vis (vis_rows, Tv) int32 slot ids (vis_rows 1 or B),
// lead_ids (L) int32, out (B, L*Tv, D).
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace ecg_jepa {

enum class DType : int { F32 = 0, F16 = 1, BF16 = 2 };

#ifndef ECG_JEPA_MAX_HEAD_DIM
#error "build with -DECG_JEPA_MAX_HEAD_DIM=... (ecg_jepa.build_ext.cuda_flags passes the limit declared in ecg_jepa.ops.cropa)"
#endif
constexpr int kMaxHeadDim = ECG_JEPA_MAX_HEAD_DIM;

cudaError_t cropa_attention_fwd(DType dtype, const void* q, const void* k, const void* v, void* o, float* lse,
                                int64_t bh, int leads, int slots, int head_dim, float scale, cudaStream_t stream);

// Writes delta = rowsum(dO * O) (BH, N) first, then dq and (dk, dv).
cudaError_t cropa_attention_bwd(DType dtype, const void* q, const void* k, const void* v, const void* o,
                                const void* d_out, const float* lse, float* delta, void* dq, void* dk, void* dv,
                                int64_t bh, int leads, int slots, int head_dim, float scale, cudaStream_t stream);

cudaError_t patch_embed_fwd(DType dtype, const void* x, const void* w, const void* bias, const float* pos,
                            const int32_t* vis, int vis_rows, const int32_t* lead_ids, void* out, int batch,
                            int leads, int samples, int patch, int dim, int t_vis, int t_all, cudaStream_t stream);

// dx must be zeroed by the caller: hidden slots get no gradient.
cudaError_t patch_embed_dx(DType dtype, const void* d_out, const void* w, const int32_t* vis, int vis_rows,
                           void* dx, int batch, int leads, int samples, int patch, int dim, int t_vis,
                           cudaStream_t stream);

}  // namespace ecg_jepa
