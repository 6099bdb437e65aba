"""``cropa_attention``: one op, many backends, the same answer, and a dispatcher that explains itself.

Backends (one module each): ``reference`` (:mod:`.reference`, the eager twin every other backend is
tested against), ``sdpa`` / ``flex`` / ``structured`` (:mod:`.torch_backends`), ``triton`` (:mod:`.triton`,
kernels in ``kernels/cropa_*.py``) and ``cuda`` (:mod:`.cuda`, kernels in ``csrc/``). Their capabilities
are declared below, once, as data; :mod:`.testing` holds the float64 oracle the tests and the benchmark
check them with.
"""
from __future__ import annotations

import importlib.util

import torch

from ... import build_ext
from ...errors import InputError, InputTypeError
from ...limits import FUSED_MAX_HEAD_DIM, SMEM_PER_CTA, SMEM_PER_CTA_UNKNOWN
from ..registry import Backend, Capabilities, Dispatcher, InputSpec, needs_grad, triton_available
from . import torch_backends
from .measured import PREDICTED_GPU_ORDER, measured_order
from .reference import reference

_FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_ALL_DTYPES = (*_FUSED_DTYPES, torch.float64)
_HAS_FLEX = importlib.util.find_spec("torch.nn.attention.flex_attention") is not None


def _flex_available() -> str | None:
    return None if _HAS_FLEX else "this torch has no FlexAttention"


def _triton_run(q, k, v, n_leads, scale):
    from .triton import attention

    return attention(q, k, v, n_leads, scale)


def _split_run(q, k, v, n_leads, scale):
    from .split import attention

    return attention(q, k, v, n_leads, scale)


def _split_fits(spec: InputSpec) -> str | None:
    """CUDA limits of the split backend's kernels (the CPU flash kernel and the torch column pass take any
    head dim and float64)."""
    if spec.device != "cuda":
        return None
    d = spec.shape[-1]
    if spec.dtype == torch.float64:
        return "float64 runs on the CPU only (the memory-efficient row kernel takes float32, float16, bfloat16)"
    if d > FUSED_MAX_HEAD_DIM:
        return f"last dim {d} > {FUSED_MAX_HEAD_DIM} (the column kernels' tiles)"
    align = 4 if spec.dtype == torch.float32 else 8
    if d % align:
        return f"head dim {d} is not a multiple of {align} (the memory-efficient row kernel's alignment)"
    return triton_available()


def _cuda_run(q, k, v, n_leads, scale):
    from .cuda import attention

    return attention(q, k, v, n_leads, scale)


def _cuda_fits(spec: InputSpec) -> str | None:
    from .cuda import fits

    if spec.device != "cuda" or spec.n_leads is None:
        return None
    return fits(spec.n_leads, spec.shape[-2] // spec.n_leads, spec.shape[-1], spec.dtype,
                SMEM_PER_CTA.get(spec.capability, SMEM_PER_CTA_UNKNOWN))


# GPU generations (compute capability) on which the cuda backend's GPU parity tests have passed, with the
# (n_leads, T) shapes where its recorded benchmark shows it faster than triton: auto picks cuda there only.
# benchmarks/gpu_check.sh measures both. sm_90 (H100, benchmarks/results/h100-20261126): parity at every
# benchmark shape and no memcheck error, but slower than triton forward+backward at every shape (the
# numbers: that folder's bench-kernels.md): no shape.
CUDA_VERIFIED: dict[tuple[int, int], tuple[tuple[int, int], ...]] = {(9, 0): ()}

_FUSED = Capabilities(devices=("cuda",), dtypes=_FUSED_DTYPES, max_last_dim=FUSED_MAX_HEAD_DIM,
                      min_capability=((torch.bfloat16, (8, 0)),))

BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("reference", reference, Capabilities(dtypes=_ALL_DTYPES)),
        Backend("sdpa", torch_backends.sdpa, Capabilities(dtypes=_ALL_DTYPES)),
        Backend("flex", torch_backends.flex, Capabilities(dtypes=_ALL_DTYPES, backward_devices=("cuda",)),
                available=_flex_available),
        Backend("structured", torch_backends.structured, Capabilities(dtypes=_ALL_DTYPES)),
        Backend("split", _split_run, Capabilities(dtypes=_ALL_DTYPES, fits=_split_fits,
                                                  min_capability=((torch.bfloat16, (8, 0)),))),
        Backend("triton", _triton_run, Capabilities(**{**_FUSED.__dict__, "interpreted_on_cpu": True}),
                available=triton_available),
        Backend("cuda", _cuda_run, Capabilities(**{**_FUSED.__dict__, "fits": _cuda_fits}),
                available=build_ext.why_unavailable,
                note="auto takes it only where CUDA_VERIFIED records GPU parity and a measured win over triton"),
    )
}

# Below this many slots per lead the structured form's small batched matmuls lose to sdpa on the CPU
# (the structured vs sdpa rows of benchmarks/results/bench-cpu-20261125-125158.md: slower at T=10, faster
# from T=23 up).
CPU_STRUCTURED_MIN_SLOTS = 16


def auto_order(spec: InputSpec) -> tuple[tuple[str, ...], str]:
    """The order ``auto`` tries backends in for ``spec`` (fastest first, as measured in benchmarks/), and why."""
    if spec.n_leads == 1:
        return ("sdpa", "reference"), "n_leads=1: CroPA is full attention, which sdpa runs unmasked"
    if spec.device == "cuda":
        measured = measured_order(spec)
        if measured is not None:
            ranked, why = measured
        else:
            cap = "sm_%d%d" % spec.capability if spec.capability else "this GPU"
            ranked, why = (), (f"no measured table for {cap} in ops/cropa/measured.json: the performance model's "
                               "predicted order (benchmarks/results/performance-model.md)")
        rest = PREDICTED_GPU_ORDER[spec.needs_grad]
        gpu_order = tuple(dict.fromkeys(b for b in (*ranked, *rest) if b not in ("cuda", "dense")))
        cap = spec.capability
        if cap in CUDA_VERIFIED and (spec.n_leads, spec.shape[-2] // spec.n_leads) in CUDA_VERIFIED[cap]:
            return ("cuda", *gpu_order), f"cuda verified and measured fastest on sm_{cap[0]}{cap[1]} for this shape"
        verified = f"verified on sm_{cap[0]}{cap[1]} but not measured fastest for this shape" if cap in CUDA_VERIFIED \
            else f"not yet verified on {'sm_%d%d' % cap if cap else 'this GPU'} (GPU parity and speed unrecorded)"
        return gpu_order, f"{why}; cuda {verified}"
    if spec.shape[-2] // spec.n_leads < CPU_STRUCTURED_MIN_SLOTS:
        return ("sdpa", "structured", "reference"), f"T < {CPU_STRUCTURED_MIN_SLOTS} slots per lead: sdpa beats structured on the CPU"
    return ("structured", "sdpa", "reference"), "fastest first on the CPU"


DISPATCH = Dispatcher("CroPA attention", BACKENDS, auto_order, "attention")


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_leads: int) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise InputTypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise InputError(f"{name} must be (B, H, N, d), got a {x.dim()}-D tensor of shape {tuple(x.shape)}")
    if not (q.shape == k.shape == v.shape):
        raise InputError(f"q, k, v must have the same shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise InputTypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.dtype not in _ALL_DTYPES:
        raise InputTypeError(f"CroPA attention takes float32, float16, bfloat16 (or float64 on the torch backends), got {q.dtype}")
    if not (q.device == k.device == v.device):
        raise InputError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if not isinstance(n_leads, int) or n_leads < 1:
        raise InputError(f"n_leads must be a positive int, got {n_leads!r}")
    n = q.shape[-2]
    if n == 0 or n % n_leads:
        raise InputError(
            f"N = {n} tokens is not a positive multiple of n_leads = {n_leads}: tokens must be lead-major, "
            "n_leads·T of them (index = lead·T + slot)"
        )


def explain_backend(
    q: torch.Tensor, k: torch.Tensor | None = None, v: torch.Tensor | None = None, n_leads: int = 8,
    backend: str | None = None,
) -> str:
    """Say which backend ``cropa_attention(q, k, v, n_leads, backend=backend)`` would use and every reason
    each other one was or was not taken. k and v default to q."""
    k = q if k is None else k
    v = q if v is None else v
    _check_inputs(q, k, v, n_leads)
    return DISPATCH.explain(InputSpec.of(q, needs_grad(q, k, v), n_leads), backend)


def cropa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    n_leads: int,
    *,
    backend: str | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Cross-Pattern Attention.

    Args:
        q, k, v: (B, H, N, d), one dtype (float32, float16 or bfloat16; float64 on the pure-torch
            backends) and device. N = n_leads·T, tokens lead-major (index = lead·T + slot).
        n_leads: leads L ≥ 1; T = N / L slots per lead, any T ≥ 1.
        backend: "auto" (fastest that can run; see :func:`explain_backend`), "reference", "sdpa", "flex",
            "structured", "split", "triton" or "cuda"; None (default): the runtime setting,
            :func:`ecg_jepa.use_backend` or ``$ECG_JEPA_ATTN_BACKEND``, else "auto".
        scale: score scale, default d^-0.5.

    Returns:
        (B, H, N, d) in q's dtype: softmax attention where token (l, t) attends (l', t') iff l == l' or t == t'.
    """
    _check_inputs(q, k, v, n_leads)
    name = DISPATCH.select(InputSpec.of(q, needs_grad(q, k, v), n_leads), backend)
    return BACKENDS[name].run(q, k, v, n_leads, q.shape[-1] ** -0.5 if scale is None else float(scale))


__all__ = ["BACKENDS", "DISPATCH", "FUSED_MAX_HEAD_DIM", "auto_order", "cropa_attention", "explain_backend"]
