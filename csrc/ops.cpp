// Torch binding of the CUDA kernels: checks, allocation, the current stream, and registration of the ops
// ecg_jepa::cropa_cuda_fwd / _bwd and ecg_jepa::patch_embed_cuda / _dx (fake implementations and autograd
// are registered from Python, in ecg_jepa/ops/_cuda_backend.py).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ecg_jepa_kernels.h"

namespace {

ecg_jepa::DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return ecg_jepa::DType::F32;
    case at::kHalf: return ecg_jepa::DType::F16;
    case at::kBFloat16: return ecg_jepa::DType::BF16;
    default: TORCH_CHECK(false, "ecg_jepa CUDA kernels take float32, float16 or bfloat16, got ", t.scalar_type());
  }
}

void check(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, " failed: ", cudaGetErrorString(err));
}

void check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.is_cuda() && k.is_cuda() && v.is_cuda(), "q, k, v must be CUDA tensors");
  TORCH_CHECK(q.dim() == 4 && q.sizes() == k.sizes() && q.sizes() == v.sizes(), "q, k, v must be (B, H, N, d) alike");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(), "q, k, v must share a dtype");
  TORCH_CHECK(q.size(3) <= ecg_jepa::kMaxHeadDim, "head dim ", q.size(3), " > ", ecg_jepa::kMaxHeadDim);
}

std::tuple<at::Tensor, at::Tensor> cropa_cuda_fwd(const at::Tensor& q_in, const at::Tensor& k_in,
                                                  const at::Tensor& v_in, int64_t n_leads, double scale) {
  check_qkv(q_in, k_in, v_in);
  const c10::cuda::CUDAGuard guard(q_in.device());
  auto q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const int64_t b = q.size(0), h = q.size(1), n = q.size(2), d = q.size(3);
  TORCH_CHECK(n_leads > 0 && n % n_leads == 0, "N = ", n, " is not a multiple of n_leads = ", n_leads);
  auto out = at::empty_like(q);
  auto lse = at::empty({b, h, n}, q.options().dtype(at::kFloat));
  check(ecg_jepa::cropa_attention_fwd(dtype_of(q), q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(),
                                      lse.data_ptr<float>(), b * h, int(n_leads), int(n / n_leads), int(d),
                                      float(scale), c10::cuda::getCurrentCUDAStream()),
        "cropa_attention_fwd");
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cropa_cuda_bwd(const at::Tensor& grad_out, const at::Tensor& q_in,
                                                              const at::Tensor& k_in, const at::Tensor& v_in,
                                                              const at::Tensor& out, const at::Tensor& lse,
                                                              int64_t n_leads, double scale) {
  check_qkv(q_in, k_in, v_in);
  const c10::cuda::CUDAGuard guard(q_in.device());
  auto q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  auto o = out.contiguous(), g = grad_out.contiguous().to(q.scalar_type()), stats = lse.contiguous();
  const int64_t b = q.size(0), h = q.size(1), n = q.size(2), d = q.size(3);
  auto delta = at::empty_like(stats);
  auto dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  check(ecg_jepa::cropa_attention_bwd(dtype_of(q), q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(),
                                      g.data_ptr(), stats.data_ptr<float>(), delta.data_ptr<float>(), dq.data_ptr(),
                                      dk.data_ptr(), dv.data_ptr(), b * h, int(n_leads), int(n / n_leads), int(d),
                                      float(scale), c10::cuda::getCurrentCUDAStream()),
        "cropa_attention_bwd");
  return {dq, dk, dv};
}

at::Tensor patch_embed_cuda(const at::Tensor& x_in, const at::Tensor& w_in, const at::Tensor& bias_in,
                            const at::Tensor& pos_in, const at::Tensor& vis_in, const at::Tensor& lead_ids_in) {
  TORCH_CHECK(x_in.is_cuda(), "x must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(x_in.device());
  auto x = x_in.contiguous(), w = w_in.contiguous(), bias = bias_in.contiguous();
  auto pos = pos_in.to(at::kFloat).contiguous();
  auto vis = vis_in.to(at::kInt).contiguous(), lead_ids = lead_ids_in.to(at::kInt).contiguous();
  const int64_t b = x.size(0), leads = x.size(1), samples = x.size(2), dim = w.size(0), patch = w.size(1);
  const int64_t t_vis = vis.size(1);
  auto out = at::empty({b, leads * t_vis, dim}, x.options());
  check(ecg_jepa::patch_embed_fwd(dtype_of(x), x.data_ptr(), w.data_ptr(), bias.data_ptr(), pos.data_ptr<float>(),
                                  vis.data_ptr<int32_t>(), int(vis.size(0)), lead_ids.data_ptr<int32_t>(),
                                  out.data_ptr(), int(b), int(leads), int(samples), int(patch), int(dim), int(t_vis),
                                  int(samples / patch), c10::cuda::getCurrentCUDAStream()),
        "patch_embed_fwd");
  return out;
}

at::Tensor patch_embed_cuda_dx(const at::Tensor& grad, const at::Tensor& w_in, const at::Tensor& vis_in,
                               at::IntArrayRef x_shape) {
  const c10::cuda::CUDAGuard guard(grad.device());
  auto g = grad.contiguous(), w = w_in.contiguous(), vis = vis_in.to(at::kInt).contiguous();
  auto dx = at::zeros(x_shape, g.options());
  check(ecg_jepa::patch_embed_dx(dtype_of(g), g.data_ptr(), w.data_ptr(), vis.data_ptr<int32_t>(), int(vis.size(0)),
                                 dx.data_ptr(), int(x_shape[0]), int(x_shape[1]), int(x_shape[2]), int(w.size(1)),
                                 int(w.size(0)), int(vis.size(1)), c10::cuda::getCurrentCUDAStream()),
        "patch_embed_dx");
  return dx;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ecg_jepa, m) {
  m.def("cropa_cuda_fwd(Tensor q, Tensor k, Tensor v, int n_leads, float scale) -> (Tensor, Tensor)");
  m.def("cropa_cuda_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, int n_leads, "
        "float scale) -> (Tensor, Tensor, Tensor)");
  m.def("patch_embed_cuda(Tensor x, Tensor weight, Tensor bias, Tensor pos, Tensor vis, Tensor lead_ids) -> Tensor");
  m.def("patch_embed_cuda_dx(Tensor grad, Tensor weight, Tensor vis, int[] x_shape) -> Tensor");
}

TORCH_LIBRARY_IMPL(ecg_jepa, CUDA, m) {
  m.impl("cropa_cuda_fwd", &cropa_cuda_fwd);
  m.impl("cropa_cuda_bwd", &cropa_cuda_bwd);
  m.impl("patch_embed_cuda", &patch_embed_cuda);
  m.impl("patch_embed_cuda_dx", &patch_embed_cuda_dx);
}

// Importable as a Python module (`import ecg_jepa._C` loads the ops above).
#include <Python.h>
static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "ecg-jepa CUDA kernels (ops in torch.ops.ecg_jepa)", -1,
                             nullptr};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module); }
