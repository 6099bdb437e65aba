"""Fused patch embedding: every backend against the float64 oracle, values and gradients (a failure
prints max/mean errors of the backend and of the same-precision reference); the dispatcher's decisions
for a GPU described rather than present."""
import pytest
import torch

from ecg_jepa.ops.patch_embed import DISPATCH, patch_embed
from ecg_jepa.ops.patch_embed.testing import parity
from ecg_jepa.ops.patch_embed.triton import patch_embed_triton
from ecg_jepa.ops.registry import InputSpec
from ecg_jepa.ops.setting import use_backend


def masks(b, kind):
    if kind == "none":
        return None
    if kind == "shared":
        return torch.randperm(50) < 20
    rows = torch.zeros(b, 50, dtype=torch.bool)
    for i in range(b):
        rows[i, torch.randperm(50)[:33]] = True
    return rows


KERNEL_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # Triton: the GPU, else the interpreter


def err(a, b):
    return (a.double() - b.double()).abs().max().item()


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("mask_kind", ["none", "shared", "per-sample"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_patch_embed_parity(seed, backend, mask_kind, dtype):
    bsz, dim = 2, 40
    leads = [int(i) for i in torch.randperm(8)[:3]]  # a lead subset in random order
    x = torch.randn(bsz, 3, 2500).to(dtype)
    w, b = (torch.randn(dim, 50) * 0.2).to(dtype), torch.randn(dim).to(dtype)
    pos = torch.randn(400, dim)
    mask = masks(bsz, mask_kind)
    grad = torch.randn(bsz, 3 * (50 if mask is None else int((~mask.reshape(-1, 50)[0]).sum())), dim)
    device = {"triton": KERNEL_DEVICE, "cuda": "cuda"}.get(backend, "cpu")
    result = parity(backend, x, w, b, pos, mask, leads, grad, device=device)
    print(result)
    assert result.ok, str(result)
    if mask is not None:  # hidden slots get exactly zero gradient
        xs = x.detach().to(device).requires_grad_()
        patch_embed(xs, w.to(device), b.to(device), pos.to(device), mask=mask.to(device), leads=leads,
                    backend=backend).backward(grad.to(device, dtype))
        hidden = (mask if mask.dim() == 2 else mask.expand(bsz, 50)).repeat_interleave(50, dim=1)
        assert (xs.grad.cpu().transpose(0, 1)[:, hidden] == 0).all()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mask_kind", ["none", "shared", "per-sample"])
def test_cuda_patch_embed_matches_oracle(seed, mask_kind, dtype):
    test_patch_embed_parity(seed, "cuda", mask_kind, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dim,n_leads,mask_kind", [(40, 3, "shared"), (768, 8, "per-sample"), (64, 2, "none"),
                                                   (136, 1, "shared")])
def test_cuda_kernels_emulated_match_oracle(seed, dtype, dim, n_leads, mask_kind):
    """csrc/patch_embed.cu run on the CPU phase by phase (several 128-dim chunks, padded tiles, per-sample
    slots) against the float64 oracle: tokens and dx."""
    from ecg_jepa import build_ext
    from ecg_jepa.ops.layout import SlotMask

    build_ext.build_emulation()
    emu = torch.ops.ecg_jepa_emu
    bsz = 2
    leads = [int(i) for i in torch.randperm(8)[:n_leads]]
    x = torch.randn(bsz, n_leads, 2500).to(dtype)
    w, b = (torch.randn(dim, 50) * 0.2).to(dtype), torch.randn(dim).to(dtype)
    pos = torch.randn(400, dim)
    mask = masks(bsz, mask_kind)

    def cuda_kernels(x, w, b, pos, mask, leads, grad):
        vis = (torch.arange(50)[None] if mask is None else SlotMask.of(mask, bsz).visible).to(torch.int32)
        tokens = emu.patch_embed(x, w, b, pos, vis, torch.tensor(leads, dtype=torch.int32))
        dx = emu.patch_embed_dx(grad.to(x.dtype), w, vis, list(x.shape))
        return tokens, (dx,)

    n_vis = 50 if mask is None else int((~mask.reshape(-1, 50)[0]).sum())
    result = parity(cuda_kernels, x, w, b, pos, mask, leads, torch.randn(bsz, n_leads * n_vis, dim))
    print(result)
    assert result.ok, str(result)


@pytest.mark.parametrize("device,dtype,capability,chosen", [
    ("cuda", torch.bfloat16, (9, 0), "triton"),
    ("cuda", torch.bfloat16, (7, 5), "reference"),
    ("cuda", torch.float64, (9, 0), "reference"),
    ("cpu", torch.float32, None, "reference"),
])
def test_dispatch_decisions_for_described_inputs(device, dtype, capability, chosen, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    spec = InputSpec(device, dtype, (64, 8, 2500), True, capability)
    assert DISPATCH.select(spec) == chosen, DISPATCH.explain(spec)


def test_cuda_backend_accepts_real_ecgs_when_described():
    """The cuda patch embedding has its own capabilities: a (B, 8, 2500) batch on a GPU is one it takes
    (the attention's head-dim limit once refused every ECG)."""
    from ecg_jepa.ops.patch_embed import BACKENDS

    reasons = BACKENDS["cuda"].caps.reasons(InputSpec("cuda", torch.bfloat16, (64, 8, 2500), True, (9, 0)))
    assert reasons == []


def test_triton_patch_embed_opcheck(seed, kernel_device):
    x, w, b = (torch.randn(*s, device=kernel_device, requires_grad=True) for s in ((2, 2, 500), (16, 50), (16,)))
    pos = torch.randn(40, 16, device=kernel_device)
    vis = torch.tensor([[0, 3, 7]], dtype=torch.int32, device=kernel_device)
    leads = torch.tensor([1, 0], dtype=torch.int32, device=kernel_device)
    torch.library.opcheck(patch_embed_triton, (x, w, b, pos, vis, leads))


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(x=torch.randn(2, 8, 2499)), ValueError, "not a multiple of the patch size"),
    (dict(mask=torch.zeros(49, dtype=torch.bool)), ValueError, r"shape \(50,\)"),
    (dict(x=torch.full((2, 8, 2500), float("nan"))), ValueError, "NaN"),
    (dict(leads=[0, 1]), ValueError, "leads must name 8 rows"),
    (dict(pos=torch.randn(400, 32, requires_grad=True)), ValueError, "pos.detach"),
    (dict(weight=torch.randn(32, 50).double()), TypeError, "share a dtype"),
    (dict(x=torch.randn(2, 2500)), ValueError, r"\(batch, leads, samples\)"),
    (dict(pos=torch.randn(400, 32, device="meta")), ValueError, "one device"),
])
def test_bad_input(kwargs, error, match):
    args = dict(x=torch.randn(2, 8, 2500), weight=torch.randn(32, 50), bias=torch.randn(32), pos=torch.randn(400, 32))
    args.update(kwargs)
    x, w, b, pos = args.pop("x"), args.pop("weight"), args.pop("bias"), args.pop("pos")
    with pytest.raises(error, match=match):
        patch_embed(x, w, b, pos, **args)


def test_encoder_with_triton_embedding_matches_reference(seed, kernel_device):
    from ecg_jepa import Encoder, EncoderConfig

    enc = Encoder(EncoderConfig(dim=32, depth=2, num_heads=2, leads=(3, 0))).to(kernel_device)
    x, mask = torch.randn(2, 2, 2500, device=kernel_device), masks(2, "per-sample").to(kernel_device)
    ref = enc(x, mask=mask)
    with use_backend(embed="triton"):
        assert err(enc(x, mask=mask), ref) < 1e-5
