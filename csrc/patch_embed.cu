// Fused patch embedding: one block per output token (forward) or per visible patch (dx).
//
// Forward: the block reads its visible patch once into shared memory, then its threads compute the D
// outputs patch . W[d] + bias[d] + pos[lead_id * T_all + slot, d] and write the token. dx: the block reads
// its token's gradient row once into shared memory and writes dY . W[:, p] to the patch's place in dx.
// W (D x P, a few hundred KB at most) stays in L2. dW and db are GEMM reductions left to the BLAS.
#include "dtype.cuh"

namespace ecg_jepa {
namespace {

constexpr int kThreads = 128;

template <typename T>
__global__ void __launch_bounds__(kThreads)
patch_embed_fwd_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                       const float* __restrict__ pos, const int32_t* __restrict__ vis, int vis_rows,
                       const int32_t* __restrict__ lead_ids, T* __restrict__ out, int leads, int samples,
                       int patch, int dim, int t_vis, int t_all) {
  extern __shared__ float shared_patch[];
  const int tok = blockIdx.x;  // lead-major among this sample's L * t_vis tokens
  const int b = blockIdx.y;
  const int lead = tok / t_vis;
  const int slot = vis[(vis_rows > 1 ? b : 0) * t_vis + tok % t_vis];
  const T* src = x + (int64_t(b) * leads + lead) * samples + int64_t(slot) * patch;
  for (int p = threadIdx.x; p < patch; p += blockDim.x) shared_patch[p] = to_float(src[p]);
  __syncthreads();
  const float* pos_row = pos + (int64_t(lead_ids[lead]) * t_all + slot) * dim;
  T* dst = out + (int64_t(b) * leads * t_vis + tok) * dim;
  for (int d = threadIdx.x; d < dim; d += blockDim.x) {
    const T* w_row = w + int64_t(d) * patch;
    float acc = to_float(bias[d]) + pos_row[d];
    for (int p = 0; p < patch; ++p) acc += shared_patch[p] * to_float(w_row[p]);
    dst[d] = from_float<T>(acc);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
patch_embed_dx_kernel(const T* __restrict__ d_out, const T* __restrict__ w, const int32_t* __restrict__ vis,
                      int vis_rows, T* __restrict__ dx, int leads, int samples, int patch, int dim, int t_vis) {
  extern __shared__ float shared_grad[];
  const int tok = blockIdx.x;
  const int b = blockIdx.y;
  const int lead = tok / t_vis;
  const int slot = vis[(vis_rows > 1 ? b : 0) * t_vis + tok % t_vis];
  const T* g = d_out + (int64_t(b) * leads * t_vis + tok) * dim;
  for (int d = threadIdx.x; d < dim; d += blockDim.x) shared_grad[d] = to_float(g[d]);
  __syncthreads();
  T* dst = dx + (int64_t(b) * leads + lead) * samples + int64_t(slot) * patch;
  for (int p = threadIdx.x; p < patch; p += blockDim.x) {
    float acc = 0.f;
    for (int d = 0; d < dim; ++d) acc += shared_grad[d] * to_float(w[int64_t(d) * patch + p]);
    dst[p] = from_float<T>(acc);
  }
}

}  // namespace

cudaError_t patch_embed_fwd(DType dtype, const void* x, const void* w, const void* bias, const float* pos,
                            const int32_t* vis, int vis_rows, const int32_t* lead_ids, void* out, int batch,
                            int leads, int samples, int patch, int dim, int t_vis, int t_all, cudaStream_t stream) {
  if (batch < 1 || leads < 1 || t_vis < 1 || patch < 1 || dim < 1) return cudaErrorInvalidValue;
  const dim3 grid(unsigned(leads * t_vis), unsigned(batch));
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    patch_embed_fwd_kernel<T><<<grid, kThreads, patch * sizeof(float), stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(bias), pos, vis, vis_rows,
        lead_ids, static_cast<T*>(out), leads, samples, patch, dim, t_vis, t_all);
    return cudaGetLastError();
  });
}

cudaError_t patch_embed_dx(DType dtype, const void* d_out, const void* w, const int32_t* vis, int vis_rows,
                           void* dx, int batch, int leads, int samples, int patch, int dim, int t_vis,
                           cudaStream_t stream) {
  if (batch < 1 || leads < 1 || t_vis < 1 || patch < 1 || dim < 1) return cudaErrorInvalidValue;
  const dim3 grid(unsigned(leads * t_vis), unsigned(batch));
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    patch_embed_dx_kernel<T><<<grid, kThreads, dim * sizeof(float), stream>>>(
        static_cast<const T*>(d_out), static_cast<const T*>(w), vis, vis_rows, static_cast<T*>(dx), leads, samples,
        patch, dim, t_vis);
    return cudaGetLastError();
  });
}

}  // namespace ecg_jepa
