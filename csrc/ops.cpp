// Torch binding of the CUDA kernels: ecg_jepa::cropa_cuda_fwd / _bwd / _plan and ecg_jepa::patch_embed_cuda /
// _dx (fake implementations and autograd are registered from Python, ecg_jepa/ops/<op>/fused.py).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "bindings.h"

namespace {

struct Cuda {
  static cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }
  static size_t smem_limit(const at::Tensor&) { return at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin; }
};

std::tuple<at::Tensor, at::Tensor> fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t n_leads,
                                       double scale) {
  TORCH_CHECK(q.is_cuda() && k.is_cuda() && v.is_cuda(), "q, k, v must be CUDA tensors");
  const c10::cuda::CUDAGuard guard(q.device());
  return ecg_jepa_binding::cropa_fwd<Cuda>(q, k, v, n_leads, scale);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bwd(const at::Tensor& g, const at::Tensor& q, const at::Tensor& k,
                                                   const at::Tensor& v, const at::Tensor& o, const at::Tensor& lse,
                                                   int64_t n_leads, double scale) {
  const c10::cuda::CUDAGuard guard(q.device());
  return ecg_jepa_binding::cropa_bwd<Cuda>(g, q, k, v, o, lse, n_leads, scale);
}

at::Tensor embed(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const at::Tensor& pos, const at::Tensor& vis,
                 const at::Tensor& lead_ids) {
  TORCH_CHECK(x.is_cuda(), "x must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(x.device());
  return ecg_jepa_binding::patch_embed<Cuda>(x, w, b, pos, vis, lead_ids);
}

at::Tensor embed_dx(const at::Tensor& grad, const at::Tensor& w, const at::Tensor& vis, at::IntArrayRef x_shape) {
  const c10::cuda::CUDAGuard guard(grad.device());
  return ecg_jepa_binding::patch_embed_dx<Cuda>(grad, w, vis, x_shape);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ecg_jepa, m) { ecg_jepa_binding::define_ops(m, "_cuda", ""); }

TORCH_LIBRARY_IMPL(ecg_jepa, CUDA, m) {
  m.impl("cropa_cuda_fwd", &fwd);
  m.impl("cropa_cuda_bwd", &bwd);
  m.impl("patch_embed_cuda", &embed);
  m.impl("patch_embed_cuda_dx", &embed_dx);
}

// Importable as a Python module (`import ecg_jepa._C` loads the ops above).
#include <Python.h>
static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "ecg-jepa CUDA kernels (ops in torch.ops.ecg_jepa)", -1,
                             nullptr};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module); }
