"""CroPA attention: every backend against the float64 oracle, forward and gradients (the tolerance rule
is ecg_jepa.ops.parity's; a failure prints max/mean errors of the backend and of the same-precision
reference); the custom ops; the dispatcher's decisions, for a GPU described rather than present."""
import dataclasses

import pytest
import torch

from ecg_jepa import CroPAAttention, cropa_attention, explain_backend
from ecg_jepa.ops.cropa import DISPATCH
from ecg_jepa.ops.cropa.testing import oracle, parity
from ecg_jepa.ops.cropa.triton import cropa_triton_fwd
from ecg_jepa.ops.layout import cropa_mask
from ecg_jepa.ops.registry import InputSpec

TORCH_BACKENDS = ["sdpa", "structured", "split"]  # split: the CPU flash row pass + the torch column pass
# (n_leads, T, d): every required value of each, in combinations the interpreter runs in seconds.
TRITON_SHAPES = [(1, 7, 16), (2, 50, 48), (8, 7, 64), (12, 1, 128), (8, 50, 48), (12, 7, 24), (1, 50, 128), (2, 1, 64),
                 (2, 100, 16), (3, 70, 32), (5, 17, 48)]  # T > 64: several slot blocks
LOW_PRECISION = [torch.float16, torch.bfloat16]


KERNEL_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # Triton: the GPU, else the interpreter


def run(backend, q, k, v, n_leads, grad_out=None):
    """Output and, when grad_out is given, (dq, dk, dv) of one backend, returned on the CPU."""
    dev = {"triton": KERNEL_DEVICE, "cuda": "cuda"}.get(backend, "cpu")
    q, k, v = (x.detach().to(dev, copy=True).requires_grad_(grad_out is not None) for x in (q, k, v))
    out = cropa_attention(q, k, v, n_leads, backend=backend)
    if grad_out is None:
        return out.detach().cpu(), ()
    out.backward(grad_out.to(out))
    return out.detach().cpu(), (q.grad.cpu(), k.grad.cpu(), v.grad.cpu())


def inputs(b, h, n_leads, t, d, dtype):
    return [torch.randn(b, h, n_leads * t, d).to(dtype) for _ in range(3)]


def max_err(a, b):
    return (a.double() - b.double()).abs().max().item()


def check_against_oracle(backend, n_leads, t, d, dtype, with_grad=True, b=2, h=2):
    q, k, v = inputs(b, h, n_leads, t, d, dtype)
    g = torch.randn(b, h, n_leads * t, d) if with_grad else None
    device = {"triton": KERNEL_DEVICE, "cuda": "cuda"}.get(backend, "cpu")
    result = parity(backend, q, k, v, n_leads, g, device=device)
    print(result)
    assert result.ok, str(result)


@pytest.mark.parametrize("backend", TORCH_BACKENDS)
@pytest.mark.parametrize("n_leads", [1, 2, 8, 12])
@pytest.mark.parametrize("t", [1, 7, 50])
@pytest.mark.parametrize("d", [16, 48, 64, 128])
def test_torch_backends_fp32(seed, backend, n_leads, t, d):
    check_against_oracle(backend, n_leads, t, d, torch.float32, b=1, h=2)


@pytest.mark.parametrize("backend", TORCH_BACKENDS)
@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("n_leads,t,d", [(8, 50, 48), (12, 7, 16), (1, 7, 64)])
def test_torch_backends_low_precision(seed, backend, dtype, n_leads, t, d):
    check_against_oracle(backend, n_leads, t, d, dtype)


@pytest.mark.parametrize("n_leads,t,d", [(1, 7, 16), (8, 50, 48), (12, 1, 128), (2, 7, 24)])
def test_flex_forward(seed, n_leads, t, d):
    check_against_oracle("flex", n_leads, t, d, torch.float32, with_grad=False)


@pytest.mark.gpu
def test_flex_stays_compiled_over_many_shapes(monkeypatch):
    """Twelve slot counts, with and without grad: every call runs the compiled kernel (past dynamo's default
    limit of 8 compilations flex would fall back to its unfused implementation, with a warning)."""
    import warnings

    import torch.nn.attention.flex_attention as flex_module

    if hasattr(flex_module, "_WARNINGS_SHOWN"):  # torch warns once per process: forget earlier warnings
        monkeypatch.setattr(flex_module, "_WARNINGS_SHOWN", set())
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="flex_attention called without torch.compile")
        for t in range(10, 22):
            q = torch.randn(1, 2, 4 * t, 16, device="cuda", requires_grad=t % 2 == 0)
            out = cropa_attention(q, q, q, 4, backend="flex")
            if q.requires_grad:
                out.sum().backward()


def test_flex_refuses_cpu_backward():
    q = torch.randn(1, 1, 16, 16, requires_grad=True)
    with pytest.raises(ValueError, match="no backward on the CPU"):
        cropa_attention(q, q, q, 4, backend="flex")


@pytest.mark.parametrize("n_leads,t,d,dtype", [(8, 50, 48, torch.bfloat16), (3, 70, 32, torch.float32),
                                               (1, 7, 16, torch.float16), (12, 7, 24, torch.float32)])
def test_triton_tuning_choices_match_oracle(seed, monkeypatch, n_leads, t, d, dtype):
    """The launch choice ``tune_cropa`` sweeps besides the defaults (every lead in one forward program)
    computes the same function."""
    import dataclasses

    from ecg_jepa.ops.cropa import triton as launch

    default = launch.config

    def chosen(n_leads, *args, **kwargs):
        return dataclasses.replace(default(n_leads, *args, **kwargs), leads_per_program=n_leads)

    monkeypatch.setattr(launch, "config", chosen)
    check_against_oracle("triton", n_leads, t, d, dtype, b=1, h=2)


@pytest.mark.parametrize("n_leads,t,d", TRITON_SHAPES)
def test_triton_fp32(seed, n_leads, t, d):
    check_against_oracle("triton", n_leads, t, d, torch.float32, b=1, h=2)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("n_leads,t,d", [(8, 50, 48), (12, 7, 16)])
def test_triton_low_precision(seed, dtype, n_leads, t, d):
    check_against_oracle("triton", n_leads, t, d, dtype, b=1, h=2)


def test_triton_noncontiguous_inputs(seed, kernel_device):
    """q, k, v as the attention module makes them: strided views of one qkv projection."""
    b, n_leads, t, h, d = 2, 3, 5, 2, 16
    qkv = torch.randn(b, n_leads * t, 3, h, d, device=kernel_device, requires_grad=True)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    assert not q.is_contiguous()
    g = torch.randn(b, h, n_leads * t, d, device=kernel_device)
    cropa_attention(q, k, v, n_leads, backend="triton").backward(g)
    out = cropa_attention(q, k, v, n_leads, backend="triton").detach().cpu()
    grads = qkv.grad.cpu().permute(2, 0, 3, 1, 4)
    qd, kd, vd = (x.detach().cpu().double() for x in (q, k, v))
    ref_out, ref_grads = run("reference", qd, kd, vd, n_leads, g.cpu().double())
    assert max_err(out, ref_out) < 1e-5
    assert all(max_err(a, r) < 1e-5 for a, r in zip(grads, ref_grads))


def test_triton_lse_is_merged_logsumexp(seed, kernel_device):
    q, k, v = inputs(1, 2, 4, 6, 16, torch.float32)
    lse = cropa_triton_fwd(q.to(kernel_device), k.to(kernel_device), v.to(kernel_device), 4, 0.25)[1].cpu()
    scores = (q.double() @ k.double().transpose(-1, -2) * 0.25).masked_fill(~cropa_mask(4, 6), float("-inf"))
    assert max_err(lse, scores.logsumexp(-1)) < 1e-5


@pytest.mark.parametrize("kind", ["triton", "split"])
def test_fused_custom_ops_pass_opcheck(seed, kernel_device, kind):
    import importlib

    module = importlib.import_module(f"ecg_jepa.ops.cropa.{kind}")
    fwd, bwd = getattr(module, f"cropa_{kind}_fwd"), getattr(module, f"cropa_{kind}_bwd")
    q, k, v = inputs(1, 2, 3, 5, 16, torch.float32)
    q, k, v = (x.to(kernel_device).requires_grad_() for x in (q, k, v))
    torch.library.opcheck(fwd, (q, k, v, 3, 0.25))
    out, lse = fwd(q, k, v, 3, 0.25)
    torch.library.opcheck(bwd, (torch.randn_like(out), q.detach(), k.detach(), v.detach(), out.detach(), lse, 3, 0.25))


def test_torch_compile_traces_triton_op_fullgraph(seed, kernel_device):
    q, k, v = inputs(1, 2, 3, 5, 16, torch.float32)
    fn = torch.compile(lambda q, k, v: cropa_attention(q, k, v, 3, backend="triton"), fullgraph=True, backend="aot_eager")
    out = fn(*(x.to(kernel_device) for x in (q, k, v))).cpu()
    assert max_err(out, oracle(q, k, v, 3)) < 1e-5


@pytest.mark.parametrize("backend", ["structured", "triton"])
def test_module_drops_into_a_model_unchanged(seed, backend, kernel_device):
    dev = kernel_device if backend == "triton" else "cpu"
    attn = CroPAAttention(32, 2, backend="reference").to(dev)
    x = torch.randn(2, 8 * 6, 32, device=dev)
    expected = attn(x, 8)
    attn.backend = backend
    assert max_err(attn(x, 8), expected) < 1e-5


def test_auto_explains_its_choice_on_cpu():
    q = torch.randn(1, 2, 4 * 20, 16)
    report = explain_backend(q, n_leads=4)
    assert "-> 'structured'" in report
    assert "cuda" in report and "CUDA_VERIFIED" in report
    assert "-> 'sdpa'" in explain_backend(q, n_leads=1)  # one lead is full attention
    assert "sdpa beats structured" in explain_backend(q, n_leads=8)  # T = 10: measured crossover


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q = torch.randn(1, 1, 8, 16)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        cropa_attention(q, q, q, 2, backend="triton")


@pytest.mark.parametrize(
    "args,error,match",
    [
        (((1, 1, 8, 16), (1, 1, 9, 16), (1, 1, 8, 16), 2), ValueError, "same shape"),
        (((1, 1, 9, 16), (1, 1, 9, 16), (1, 1, 9, 16), 2), ValueError, "multiple of n_leads"),
        (((1, 8, 16), (1, 8, 16), (1, 8, 16), 2), ValueError, r"\(B, H, N, d\)"),
        (((1, 1, 8, 16), (1, 1, 8, 16), (1, 1, 8, 16), 0), ValueError, "n_leads"),
    ],
)
def test_bad_shapes(args, error, match):
    q, k, v = (torch.randn(s) for s in args[:3])
    with pytest.raises(error, match=match):
        cropa_attention(q, k, v, args[3])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("n_leads,t,d", [(1, 7, 16), (8, 50, 48), (12, 1, 128), (12, 7, 24), (2, 50, 64), (17, 23, 48)])
def test_cuda_matches_oracle(seed, n_leads, t, d, dtype):
    check_against_oracle("cuda", n_leads, t, d, dtype, b=2, h=2)


# ---- split: the row pass (PyTorch's fused attention) + the column pass (Triton or torch), one softmax ----

SPLIT_SHAPES = [(1, 7, 16), (8, 50, 48), (12, 1, 32), (12, 7, 24), (2, 3, 8), (17, 3, 16), (5, 17, 48)]


def split_kernels(columns, rows="library"):
    """The split op's forward and backward with the column pass ("triton" or "torch") and the row pass
    ("triton" or "library": the memory-efficient kernel on a GPU, the CPU flash kernel on the CPU) chosen
    explicitly, as a parity callable (Triton kernels run under the interpreter on the CPU)."""
    from ecg_jepa.ops.cropa import split

    def run(q, k, v, n_leads, grad_out):
        q, k, v = (x.to(KERNEL_DEVICE) for x in (q, k, v))
        scale = q.shape[-1] ** -0.5
        out, lse = split.forward(q, k, v, n_leads, scale, columns=columns, rows=rows)
        if grad_out is None:
            return out.cpu(), ()
        grads = split.backward(grad_out.to(KERNEL_DEVICE, q.dtype), q, k, v, out, lse, n_leads, scale,
                               columns=columns, rows=rows)
        return out.cpu(), tuple(g.cpu() for g in grads)

    run.__name__ = f"split[{rows} rows, {columns} columns]"
    return run


SPLIT_PASSES = [("triton", "triton"), ("triton", "library"), ("torch", "library")]  # (columns, rows)


@pytest.mark.parametrize("columns,rows", SPLIT_PASSES)
@pytest.mark.parametrize("dtype", [torch.float32, *LOW_PRECISION])
@pytest.mark.parametrize("n_leads,t,d", SPLIT_SHAPES)
def test_split_matches_oracle(seed, columns, rows, dtype, n_leads, t, d):
    """Both column passes, both row passes, every dtype, L = 1 (no column keys), T = 1 (one row key), 12
    and 17 leads (16- and 32-lane tiles), odd T and small or odd head dims, forward and the three gradients."""
    if KERNEL_DEVICE == "cuda" and d % 8:
        pytest.skip("the memory-efficient row kernel needs head dims that are multiples of 8")
    q, k, v = inputs(2, 2, n_leads, t, d, dtype)
    result = parity(split_kernels(columns, rows), q, k, v, n_leads, torch.randn(2, 2, n_leads * t, d))
    print(result)
    assert result.ok, str(result)


@pytest.mark.parametrize("columns,rows", SPLIT_PASSES)
def test_split_takes_packed_and_contiguous_inputs(seed, columns, rows, kernel_device):
    """q, k, v as views of the module's packed projection (the row pass's free view), and as contiguous
    (B, H, N, d) tensors (copied into that layout): the same answer, gradients into the packed tensor."""
    b, n_leads, t, h, d = 2, 3, 5, 2, 16
    qkv = torch.randn(b, n_leads * t, 3, h, d, device=kernel_device, requires_grad=True)
    g = torch.randn(b, h, n_leads * t, d, device=kernel_device)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    for args in ((q, k, v), tuple(x.contiguous() for x in (q, k, v))):
        result = parity(split_kernels(columns, rows), *(x.detach() for x in args), n_leads, g)
        assert result.ok, str(result)
    cropa_attention(q, k, v, n_leads, backend="split").backward(g)
    ref = [x.detach().cpu().double().requires_grad_() for x in (q, k, v)]
    oracle(*ref, n_leads).backward(g.cpu().double())
    for got, want in zip(qkv.grad.cpu().permute(2, 0, 3, 1, 4), ref):  # dq, dk, dv through the packed tensor
        assert max_err(got, want.grad) < 1e-5


def test_split_lse_is_merged_logsumexp(seed, kernel_device):
    from ecg_jepa.ops.cropa.split import cropa_split_fwd

    q, k, v = inputs(1, 2, 4, 6, 16, torch.float32)
    lse = cropa_split_fwd(q.to(kernel_device), k.to(kernel_device), v.to(kernel_device), 4, 0.25)[1].cpu()
    scores = (q.double() @ k.double().transpose(-1, -2) * 0.25).masked_fill(~cropa_mask(4, 6), float("-inf"))
    want = scores.logsumexp(-1).reshape(1, 2, 4, 6).transpose(1, 2)  # (B, L, H, T)
    assert max_err(lse[..., :6], want) < 1e-5


def test_torch_compile_traces_split_op_fullgraph(seed, kernel_device):
    q, k, v = (x.to(kernel_device).requires_grad_() for x in inputs(1, 2, 3, 5, 16, torch.float32))
    fn = torch.compile(lambda q, k, v: cropa_attention(q, k, v, 3, backend="split"), fullgraph=True, backend="aot_eager")
    out = fn(q, k, v)
    out.sum().backward()
    ref = [x.detach().cpu().double().requires_grad_() for x in (q, k, v)]
    want = oracle(*ref, 3)
    want.sum().backward()
    assert max_err(out.detach().cpu(), want) < 1e-5
    assert all(max_err(x.grad.cpu(), r.grad) < 1e-5 for x, r in zip((q, k, v), ref))


@pytest.mark.parametrize("columns,rows", SPLIT_PASSES)
@pytest.mark.parametrize("mutation", ["self key in the column pass", "column dk dropped", "LSE off by log 2"])
def test_a_wrong_split_backward_fails_parity(seed, monkeypatch, columns, rows, mutation):
    """The split tests have teeth: a column backward that also differentiates the self key, that drops
    its dk, or that recomputes P against a wrong LSE (the merged one plus log 2), fails."""
    from ecg_jepa.ops.cropa import split

    real_torch, real_triton = split.column_backward_torch, split.column_backward_triton
    real = real_triton if columns == "triton" else real_torch

    def wrong(grad_out, q, k, v, out, lse, dq, dk, dv, n_leads, scale):
        if mutation == "self key in the column pass":  # the self key's gradient counted twice
            t = q.shape[2] // n_leads
            p = torch.exp((q * k).sum(-1) * scale - lse[..., :t].permute(0, 2, 1, 3).flatten(2).to(q.dtype))
            dv.add_((p[..., None] * grad_out).to(dv.dtype))
            return real(grad_out, q, k, v, out, lse, dq, dk, dv, n_leads, scale)
        if mutation == "column dk dropped":
            return real(grad_out, q, k, v, out, lse, dq, torch.zeros_like(dk), dv, n_leads, scale)
        return real(grad_out, q, k, v, out, lse + 0.6931, dq, dk, dv, n_leads, scale)

    monkeypatch.setattr(split, "column_backward_triton" if columns == "triton" else "column_backward_torch", wrong)
    q, k, v = inputs(1, 2, 4, 6, 16, torch.float32)
    result = parity(split_kernels(columns, rows), q, k, v, 4, torch.randn(1, 2, 24, 16))
    assert result.checks[0].ok and not result.ok, str(result)


@pytest.fixture(scope="module")
def emulated():
    """The CUDA kernels' source compiled for the CPU (csrc/emulation.cpp): their logic, without a GPU."""
    from ecg_jepa import build_ext

    build_ext.build_emulation()
    return torch.ops.ecg_jepa_emu


def emulated_kernels(emulated, limit):
    """The emulated forward (and, with grad_out, backward) as a parity callable."""
    def cuda_kernels(q, k, v, n_leads, grad_out):
        out, lse = emulated.cropa_fwd(q, k, v, n_leads, q.shape[-1] ** -0.5, limit)
        if grad_out is None:
            return out, ()
        return out, emulated.cropa_bwd(grad_out.to(q.dtype), q, k, v, out, lse, n_leads, q.shape[-1] ** -0.5, limit)

    return cuda_kernels


@pytest.mark.parametrize("n_leads,t,d,dtype,smem_kb", [
    (8, 50, 48, torch.bfloat16, 227),    # the paper's shape
    (8, 50, 48, torch.float16, 163),     # A100's shared memory
    (12, 7, 128, torch.float16, 227),    # d128: the backward's key phase in two sweeps (dk, then dv)
    (5, 17, 48, torch.bfloat16, 45),     # a tiny limit the (batch, head) CTAs still fit
    (1, 7, 16, torch.float16, 227),      # one lead: full attention, no column part
    (3, 20, 24, torch.bfloat16, 227),    # d not a multiple of 16 (padded tiles)
    (2, 33, 20, torch.bfloat16, 227),    # d·2 bytes not a multiple of 16: element-wise copies
    (4, 70, 64, torch.bfloat16, 90),     # T > 64: five slot blocks
])
def test_cuda_kernels_emulated_match_oracle(seed, emulated, n_leads, t, d, dtype, smem_kb):
    """csrc/cropa_attention.cu on the CPU (both kernels warp by warp, their lanes as fibers) against the
    float64 oracle, forward and gradients: slot blocks, the column part, the online softmax, the backward's
    dq and dk/dv phases on the forward's O and LSE."""
    q, k, v = inputs(2, 2, n_leads, t, d, dtype)
    result = parity(emulated_kernels(emulated, smem_kb * 1024), q, k, v, n_leads, torch.randn(2, 2, n_leads * t, d))
    print(result)
    assert result.ok, str(result)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("n_leads,t,d", [
    (1, 1, 32), (1, 50, 64), (8, 1, 48), (12, 1, 128), (12, 7, 48), (12, 23, 32), (8, 17, 128), (17, 5, 48),
    (2, 31, 64), (3, 9, 20), (12, 50, 48),  # the last: a CTA fills half the shared memory: 16 warps
])
def test_cuda_forward_emulated_matches_oracle(seed, emulated, dtype, n_leads, t, d):
    """The tensor-core forward (csrc/warp.cuh fragments, emulated lane by lane with the PTX layouts) against
    the float64 oracle: L = 1 (no column keys), T = 1 (one row key), L = 12 and 17, odd T, head dims 20-128,
    8 and 16 warps per CTA.
    Printed: max / mean error of the kernel and of the same-precision reference; bound: 2x the reference's
    max error plus one ulp at the output's scale."""
    q, k, v = inputs(1, 2, n_leads, t, d, dtype)
    result = parity(emulated_kernels(emulated, 227 * 1024), q, k, v, n_leads)
    print(result)
    assert result.ok, str(result)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("n_leads,t,d", [
    (1, 1, 32), (1, 50, 64), (8, 1, 48), (12, 1, 128), (12, 7, 48), (12, 23, 32), (8, 17, 128), (17, 5, 48),
    (3, 9, 20), (2, 31, 96), (3, 9, 112), (12, 50, 48),  # 96: the last one-sweep key phase; 112, 128: two sweeps
])
def test_cuda_backward_emulated_matches_oracle(seed, emulated, dtype, n_leads, t, d):
    """The warp-level backward (dq phase, then dk/dv phase, fragments emulated lane by lane) against the
    float64 oracle's gradients: L = 1 (no column part), T = 1 (one row key), L = 12 and 17, odd T, head dims
    20-128 (one- and two-sweep key phases), on the forward's O and LSE."""
    q, k, v = inputs(1, 1, n_leads, t, d, dtype)
    result = parity(emulated_kernels(emulated, 227 * 1024), q, k, v, n_leads, torch.randn(1, 1, n_leads * t, d))
    print(result)
    assert result.ok, str(result)


def test_cuda_forward_lse_is_the_natural_log_sum_exp(seed, emulated):
    """The forward's LSE (the backward's input): natural log of the sum over each query's CroPA keys."""
    n_leads, t, d = 4, 9, 32
    q, k, v = inputs(1, 2, n_leads, t, d, torch.bfloat16)
    _, lse = emulated.cropa_fwd(q, k, v, n_leads, d ** -0.5, 227 * 1024)
    scores = (q.double() @ k.double().transpose(-1, -2) * d ** -0.5).masked_fill(~cropa_mask(n_leads, t), float("-inf"))
    assert max_err(lse, scores.logsumexp(-1)) < 1e-5


def test_a_broken_fragment_layout_fails_parity(seed, emulated):
    """The emulation checks the fragment layouts: with two lanes' ldmatrix registers swapped (the test
    switch fragment_fault), the forward fails the oracle, and so does the backward alone (on a correct
    forward's O and LSE: every gradient); restored, both pass."""
    q, k, v = inputs(1, 2, 8, 50, 48, torch.bfloat16)
    g = torch.randn_like(q, dtype=torch.float32)
    kernels = emulated_kernels(emulated, 227 * 1024)
    emulated.fragment_fault(1)
    try:
        broken = parity(kernels, q, k, v, 8)
    finally:
        emulated.fragment_fault(0)
    print(broken)
    assert not broken.ok and parity(kernels, q, k, v, 8).ok

    def broken_backward(q, k, v, n_leads, grad_out):
        out, lse = emulated.cropa_fwd(q, k, v, n_leads, q.shape[-1] ** -0.5, 227 * 1024)
        emulated.fragment_fault(1)
        try:
            return out, emulated.cropa_bwd(grad_out.to(q.dtype), q, k, v, out, lse, n_leads, q.shape[-1] ** -0.5,
                                           227 * 1024)
        finally:
            emulated.fragment_fault(0)

    result = parity(broken_backward, q, k, v, 8, g)
    print(result)
    assert [c.ok for c in result.checks] == [True, False, False, False]
    assert parity(kernels, q, k, v, 8, g).ok


def test_cuda_refuses_float32(emulated):
    """The tensor-core forward takes 16-bit data; float32 is a clear error here and a reason in why_not."""
    from ecg_jepa.ops.cropa.cuda import fits

    q = torch.randn(1, 1, 8, 16)
    with pytest.raises(RuntimeError, match="float16 or bfloat16 only"):
        emulated.cropa_fwd(q, q, q, 2, 0.25, 227 * 1024)
    assert "float32" in fits(2, 4, 16, torch.float32, 227 * 1024)
    assert "shared memory" in fits(17, 50, 128, torch.bfloat16, 163 * 1024)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n_leads", [1, 3, 8, 12, 17])
@pytest.mark.parametrize("d", [16, 20, 48, 64, 128])
def test_shared_memory_mirror_matches_the_kernels(emulated, dtype, n_leads, d):
    """The dispatcher's and the kernel report's shared-memory arithmetic and plans (ops/cropa/cuda.py
    ``plan``: the forward's and the backward's staging) are the kernels' own (csrc ``attention_plan``)."""
    from ecg_jepa.limits import SMEM_PER_CTA
    from ecg_jepa.ops.cropa.cuda import plan

    code = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}[dtype]
    size = torch.finfo(dtype).bits // 8
    for limit in (*SMEM_PER_CTA.values(), 48 * 1024, 8 * 1024):
        for t in (1, 17, 50, 100):
            assert tuple(emulated.cropa_plan(code, n_leads, t, d, limit)) == plan(n_leads, t, d, size, limit)


def test_oracle_is_the_reference_in_float64(seed):
    q, k, v = (x.double() for x in inputs(2, 2, 3, 5, 8, torch.float64))
    assert max_err(run("reference", q, k, v, 3)[0], oracle(q, k, v, 3)) < 1e-12


def test_a_wrong_kernel_fails_parity(seed, monkeypatch):
    """The check has teeth: a backend that is 0.5 % off, or that counts the self key twice, fails."""
    from ecg_jepa.ops.cropa import BACKENDS, torch_backends

    q, k, v = inputs(1, 2, 4, 6, 16, torch.float32)
    scaled = lambda *a: torch_backends.structured(*a) * 1.005  # noqa: E731
    monkeypatch.setitem(BACKENDS, "structured", BACKENDS["structured"].__class__("structured", scaled))
    assert not parity("structured", q, k, v, 4).ok

    def twice(q, k, v, n_leads, scale):  # the self key in both the row and the column part
        t = q.shape[-2] // n_leads
        s = (q @ k.transpose(-1, -2)) * scale
        allowed = cropa_mask(n_leads, t).double() + torch.eye(n_leads * t, dtype=torch.float64)
        w = torch.where(allowed > 0, s.double().exp() * allowed, 0.0)
        return ((w / w.sum(-1, keepdim=True)) @ v.double()).to(q.dtype)

    monkeypatch.setitem(BACKENDS, "structured", BACKENDS["structured"].__class__("structured", twice))
    result = parity("structured", q, k, v, 4)
    assert not result.ok and "out: FAIL" in str(result) and "same-precision reference" in str(result)


def _spec(device, dtype, d=48, grad=True, n_leads=8, t=50, capability=(9, 0)):
    return InputSpec(device, dtype, (64, 16, n_leads * t, d), grad, capability if device == "cuda" else None, n_leads)


FAKE_TABLE = {"device": "a card", "sm": "9.0", "dtype": "bfloat16", "torch": "2.x", "triton": "3.x", "commit": "abc",
              "source": "benchmarks/results/x.json", "shapes": [
                  {"batch": 64, "heads": 16, "leads": 8, "slots": 50, "head_dim": 48,
                   "fwd": {"sdpa": 0.3, "triton": 0.25, "split": 0.4}, "fwd_bwd": {"sdpa": 1.1, "triton": 1.3, "split": 0.8}},
                  {"batch": 64, "heads": 16, "leads": 8, "slots": 17, "head_dim": 48,
                   "fwd": {"sdpa": 0.2, "triton": 0.3}, "fwd_bwd": {"sdpa": 0.6, "triton": 1.0}}]}


@pytest.mark.parametrize("spec,chosen", [
    (_spec("cuda", torch.bfloat16), "split"),                 # training: the fastest measured forward+backward
    (_spec("cuda", torch.bfloat16, grad=False), "triton"),    # inference: the fastest measured forward
    (_spec("cuda", torch.bfloat16, t=20), "sdpa"),            # the nearest measured shape (T = 17) decides
    (_spec("cuda", torch.bfloat16, capability=(8, 0)), "split"),  # no table for sm_80: the model's prediction
    (_spec("cuda", torch.float32, d=160, grad=False), "sdpa"),  # head dim over the fused kernels' limit
    (_spec("cuda", torch.bfloat16, d=44), "sdpa"),            # split: not a multiple of 8; triton: slower measured
    (_spec("cuda", torch.bfloat16, capability=(7, 5), grad=False), "sdpa"),  # bf16 needs sm_80 for the fused kernels
    (_spec("cuda", torch.float64, grad=False), "sdpa"),
    (_spec("cuda", torch.bfloat16, n_leads=1), "sdpa"),
    (_spec("cpu", torch.float32), "structured"),
    (_spec("cpu", torch.float32, t=10), "sdpa"),
    (_spec("cpu", torch.float32, grad=True), "structured"),
])
def test_dispatch_decisions_for_described_inputs(spec, chosen, monkeypatch):
    """The choice for a GPU is a pure function of the described inputs and the measured table, testable
    without one (here a table written for the test)."""
    from ecg_jepa.ops.cropa import measured

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(measured, "tables", lambda: (FAKE_TABLE,))
    assert DISPATCH.select(spec) == chosen, DISPATCH.explain(spec)


def test_auto_reads_the_table_of_its_card_and_dtype(monkeypatch):
    """Several tables of one GPU generation: the input's card and dtype decide; another dtype falls back to
    bfloat16's order and says so."""
    from ecg_jepa.ops.cropa import measured

    other_card = {**FAKE_TABLE, "device": "card B", "shapes": [{**FAKE_TABLE["shapes"][0],
                                                                "fwd_bwd": {"sdpa": 0.5, "split": 0.8}}]}
    fp16 = {**FAKE_TABLE, "dtype": "float16", "shapes": [{**FAKE_TABLE["shapes"][0], "fwd_bwd": {"triton": 0.1}}]}
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(measured, "tables", lambda: (FAKE_TABLE, fp16, other_card))
    spec = _spec("cuda", torch.bfloat16)
    assert DISPATCH.select(dataclasses.replace(spec, device_name="a card")) == "split"
    assert DISPATCH.select(dataclasses.replace(spec, device_name="card B")) == "sdpa"
    assert DISPATCH.select(dataclasses.replace(spec, dtype=torch.float16, device_name="a card")) == "triton"
    text = DISPATCH.explain(dataclasses.replace(spec, dtype=torch.float32, device_name="a card"))
    assert "no float32 table, bfloat16's order used" in text


def test_auto_says_where_its_gpu_order_comes_from(monkeypatch):
    from ecg_jepa.ops.cropa import measured

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(measured, "tables", lambda: (FAKE_TABLE,))
    text = DISPATCH.explain(_spec("cuda", torch.bfloat16))
    assert "measured on a card" in text and "split 0.800 ms" in text and "benchmarks/results/x.json" in text
    text = DISPATCH.explain(_spec("cuda", torch.bfloat16, capability=(8, 0)))
    assert "no measured table for sm_80" in text and "performance model" in text


def test_committed_gpu_tables_name_their_provenance():
    """Every committed table says which card, versions, commit and result file its times come from, and
    times only backends that exist."""
    from ecg_jepa.ops.cropa import BACKENDS
    from ecg_jepa.ops.cropa.measured import tables

    assert tables(), "ecg_jepa/ops/cropa/measured.json holds no table"
    for table in tables():
        assert all(table[key] for key in ("device", "sm", "dtype", "torch", "commit", "source"))
        for entry in table["shapes"]:
            assert set(entry["fwd"]) | set(entry["fwd_bwd"]) <= set(BACKENDS)


def test_no_backend_at_all_is_one_clear_error():
    """A device no backend runs on (meta) gets the dispatcher's explanation, not a recursion."""
    q = torch.randn(1, 1, 16, 8, device="meta")
    with pytest.raises(ValueError, match="no CroPA attention backend can run on meta"):
        cropa_attention(q, q, q, 8)


def test_explain_reports_every_reason(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    text = DISPATCH.explain(_spec("cpu", torch.float64, d=160), "auto")
    triton_line = next(line for line in text.splitlines() if line.strip().startswith("triton"))
    assert "needs CUDA tensors" in triton_line and "float64" in triton_line and "last dim 160 > 128" in triton_line


def test_bad_dtypes_and_backend_names():
    q = torch.randn(1, 1, 8, 16)
    with pytest.raises(TypeError, match="share a dtype"):
        cropa_attention(q, q.half(), q, 2)
    with pytest.raises(TypeError, match="float32, float16, bfloat16"):
        cropa_attention(q.int(), q.int(), q.int(), 2)
    with pytest.raises(ValueError, match="unknown CroPA attention backend"):
        cropa_attention(q, q, q, 2, backend="fast")
    with pytest.raises(ValueError, match="float64 is for the pure-torch"):
        cropa_attention(q.double(), q.double(), q.double(), 2, backend="triton")
