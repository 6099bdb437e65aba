// The torch side of the kernels, shared by the CUDA extension (ops.cpp) and the CPU emulation
// (emulation.cpp): the ops' schemas, checks, allocation, and the calls of the raw-pointer launchers. The
// including file passes an Env type with static stream() and smem_limit(tensor) to the templates below.
#pragma once
#include <string>

#include <ATen/ATen.h>
#include <torch/library.h>

#include "ecg_jepa_kernels.h"

namespace ecg_jepa_binding {

inline ecg_jepa::DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return ecg_jepa::DType::F32;
    case at::kHalf: return ecg_jepa::DType::F16;
    case at::kBFloat16: return ecg_jepa::DType::BF16;
    default: TORCH_CHECK(false, "ecg_jepa kernels take float32, float16 or bfloat16, got ", t.scalar_type());
  }
}

inline void check(cudaError_t err, const char* what) { TORCH_CHECK(err == cudaSuccess, what, " failed (error ", int(err), ")"); }

inline void check_fits(const at::Tensor& q, int64_t n_leads, size_t smem_limit) {
  TORCH_CHECK(q.scalar_type() != at::kFloat, "the CUDA CroPA kernels run on tensor cores: float16 or bfloat16 only, got float32");
  const int64_t slots = q.size(2) / n_leads;
  const auto plan = ecg_jepa::attention_plan(dtype_of(q), int(n_leads), int(slots), int(q.size(3)), smem_limit);
  TORCH_CHECK(plan.fwd_smem > 0 && plan.bwd_group > 0, "CroPA attention with ", n_leads, " leads, ", slots,
              " slots and head dim ", q.size(3), " needs more shared memory per CTA than the device's ", smem_limit, " bytes");
}

inline void check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.dim() == 4 && q.sizes() == k.sizes() && q.sizes() == v.sizes(), "q, k, v must be (B, H, N, d) alike");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(), "q, k, v must share a dtype");
  TORCH_CHECK(q.size(3) <= ecg_jepa::kMaxHeadDim, "head dim ", q.size(3), " > ", ecg_jepa::kMaxHeadDim);
}

template <typename Env>
std::tuple<at::Tensor, at::Tensor> cropa_fwd(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                             int64_t n_leads, double scale) {
  check_qkv(q_in, k_in, v_in);
  auto q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const int64_t b = q.size(0), h = q.size(1), n = q.size(2), d = q.size(3);
  TORCH_CHECK(n_leads > 0 && n % n_leads == 0, "N = ", n, " is not a multiple of n_leads = ", n_leads);
  check_fits(q, n_leads, Env::smem_limit(q));
  auto out = at::empty_like(q);
  auto lse = at::empty({b, h, n}, q.options().dtype(at::kFloat));
  check(ecg_jepa::cropa_attention_fwd(dtype_of(q), q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(),
                                      lse.data_ptr<float>(), b * h, int(n_leads), int(n / n_leads), int(d), float(scale),
                                      Env::smem_limit(q), Env::stream()),
        "cropa_attention_fwd");
  return {out, lse};
}

template <typename Env>
std::tuple<at::Tensor, at::Tensor, at::Tensor> cropa_bwd(const at::Tensor& grad_out, const at::Tensor& q_in,
                                                         const at::Tensor& k_in, const at::Tensor& v_in,
                                                         const at::Tensor& out, const at::Tensor& lse, int64_t n_leads,
                                                         double scale) {
  check_qkv(q_in, k_in, v_in);
  auto q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  auto o = out.contiguous(), g = grad_out.contiguous().to(q.scalar_type()), stats = lse.contiguous();
  const int64_t b = q.size(0), h = q.size(1), n = q.size(2), d = q.size(3);
  check_fits(q, n_leads, Env::smem_limit(q));
  auto dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  check(ecg_jepa::cropa_attention_bwd(dtype_of(q), q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), g.data_ptr(),
                                      stats.data_ptr<float>(), dq.data_ptr(), dk.data_ptr(),
                                      dv.data_ptr(), b * h, int(n_leads), int(n / n_leads), int(d), float(scale),
                                      Env::smem_limit(q), Env::stream()),
        "cropa_attention_bwd");
  return {dq, dk, dv};
}

// (forward shared bytes, backward leads per CTA, backward shared bytes) for a device with ``smem_limit``
// bytes of shared memory per CTA; 0 bytes or a group of 0: does not fit.
inline std::vector<int64_t> cropa_plan(int64_t dtype, int64_t n_leads, int64_t slots, int64_t head_dim, int64_t smem_limit) {
  const auto plan = ecg_jepa::attention_plan(static_cast<ecg_jepa::DType>(dtype), int(n_leads), int(slots), int(head_dim),
                                             size_t(smem_limit));
  return {int64_t(plan.fwd_smem), plan.bwd_group, int64_t(plan.bwd_smem)};
}

// The ops' schemas, written once for both libraries: ``tag`` goes after each op's family name (the extension's
// "_cuda": cropa_cuda_fwd, patch_embed_cuda_dx; the emulation's ""), and ``extra`` ends the attention
// ops' arguments (the emulation's ", int smem_limit": tests choose the device's shared memory per CTA).
inline void define_ops(torch::Library& m, const std::string& tag, const std::string& extra) {
  const auto def = [&](const std::string& schema) { m.def(schema.c_str()); };
  def("cropa" + tag + "_fwd(Tensor q, Tensor k, Tensor v, int n_leads, float scale" + extra + ") -> (Tensor, Tensor)");
  def("cropa" + tag + "_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, int n_leads, "
      "float scale" + extra + ") -> (Tensor, Tensor, Tensor)");
  m.def(("cropa" + tag + "_plan(int dtype, int n_leads, int slots, int head_dim, int smem_limit) -> int[]").c_str(), &cropa_plan);
  def("patch_embed" + tag + "(Tensor x, Tensor weight, Tensor bias, Tensor pos, Tensor vis, Tensor lead_ids) -> Tensor");
  def("patch_embed" + tag + "_dx(Tensor grad, Tensor weight, Tensor vis, int[] x_shape) -> Tensor");
}

template <typename Env>
at::Tensor patch_embed(const at::Tensor& x_in, const at::Tensor& w_in, const at::Tensor& bias_in, const at::Tensor& pos_in,
                       const at::Tensor& vis_in, const at::Tensor& lead_ids_in) {
  auto x = x_in.contiguous(), w = w_in.contiguous(), bias = bias_in.contiguous();
  auto pos = pos_in.to(at::kFloat).contiguous();
  auto vis = vis_in.to(at::kInt).contiguous(), lead_ids = lead_ids_in.to(at::kInt).contiguous();
  const int64_t b = x.size(0), leads = x.size(1), samples = x.size(2), dim = w.size(0), patch = w.size(1);
  const int64_t t_vis = vis.size(1);
  auto out = at::empty({b, leads * t_vis, dim}, x.options());
  check(ecg_jepa::patch_embed_fwd(dtype_of(x), x.data_ptr(), w.data_ptr(), bias.data_ptr(), pos.data_ptr<float>(),
                                  vis.data_ptr<int32_t>(), int(vis.size(0)), lead_ids.data_ptr<int32_t>(), out.data_ptr(),
                                  int(b), int(leads), int(samples), int(patch), int(dim), int(t_vis), int(samples / patch),
                                  Env::stream()),
        "patch_embed_fwd");
  return out;
}

template <typename Env>
at::Tensor patch_embed_dx(const at::Tensor& grad, const at::Tensor& w_in, const at::Tensor& vis_in, at::IntArrayRef x_shape) {
  auto g = grad.contiguous(), w = w_in.contiguous(), vis = vis_in.to(at::kInt).contiguous();
  auto dx = at::zeros(x_shape, g.options());
  check(ecg_jepa::patch_embed_dx(dtype_of(g), g.data_ptr(), w.data_ptr(), vis.data_ptr<int32_t>(), int(vis.size(0)),
                                 dx.data_ptr(), int(x_shape[0]), int(x_shape[1]), int(x_shape[2]), int(w.size(1)),
                                 int(w.size(0)), int(vis.size(1)), Env::stream()),
        "patch_embed_dx");
  return dx;
}

}  // namespace ecg_jepa_binding
