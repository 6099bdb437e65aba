// The CUDA kernels' source compiled for the CPU (ECG_JEPA_HOST_EMULATION, see block.cuh), bound as the ops
// ecg_jepa_emu::cropa_fwd / _bwd / _plan and ecg_jepa_emu::patch_embed / _dx on CPU tensors, and
// ecg_jepa_emu::fragment_fault (a test switch that breaks the emulated ldmatrix layout, warp.cuh). Built only by the
// tests (ecg_jepa.build_ext.build_emulation), which check the kernels' logic against the float64 oracle on
// machines without a GPU. ``smem_limit`` is an argument here, so tests can force several CTAs per lead group.
#define ECG_JEPA_HOST_EMULATION
#include "cropa_attention.cu"
#include "patch_embed.cu"

#include "bindings.h"

namespace {

struct Host {
  static cudaStream_t stream() { return nullptr; }
  static inline size_t limit = 227 * 1024;
  static size_t smem_limit(const at::Tensor&) { return limit; }
};

std::tuple<at::Tensor, at::Tensor> fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t n_leads,
                                       double scale, int64_t smem_limit) {
  Host::limit = size_t(smem_limit);
  return ecg_jepa_binding::cropa_fwd<Host>(q, k, v, n_leads, scale);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bwd(const at::Tensor& g, const at::Tensor& q, const at::Tensor& k,
                                                   const at::Tensor& v, const at::Tensor& o, const at::Tensor& lse,
                                                   int64_t n_leads, double scale, int64_t smem_limit) {
  Host::limit = size_t(smem_limit);
  return ecg_jepa_binding::cropa_bwd<Host>(g, q, k, v, o, lse, n_leads, scale);
}

void fragment_fault(int64_t on) { ecg_jepa::fragment_fault() = int(on); }

}  // namespace

TORCH_LIBRARY(ecg_jepa_emu, m) {
  ecg_jepa_binding::define_ops(m, "", ", int smem_limit");
  m.def("fragment_fault(int on) -> ()", &fragment_fault);
}

TORCH_LIBRARY_IMPL(ecg_jepa_emu, CPU, m) {
  m.impl("cropa_fwd", &fwd);
  m.impl("cropa_bwd", &bwd);
  m.impl("patch_embed", &ecg_jepa_binding::patch_embed<Host>);
  m.impl("patch_embed_dx", &ecg_jepa_binding::patch_embed_dx<Host>);
}
