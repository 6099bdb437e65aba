"""Fused patch embedding: every backend against a float64 first-principles oracle, values and gradients."""
import pytest
import torch

from ecg_jepa.ops.patch_embed import patch_embed
from ecg_jepa.ops._triton_patch_embed import patch_embed_triton


def oracle(x, weight, bias, pos, mask, leads):
    """float64, one token at a time: patch @ Wᵀ + b + pos[lead·T + slot], lead-major, slots ascending."""
    x, weight, bias, pos = (t.double() for t in (x, weight, bias, pos))
    b, n_leads, samples = x.shape
    dim, p = weight.shape
    t_all = samples // p
    out = []
    for i in range(b):
        row_mask = torch.zeros(t_all, dtype=torch.bool) if mask is None else (mask if mask.dim() == 1 else mask[i])
        slots = [s for s in range(t_all) if not row_mask[s]]
        out.append(torch.stack([
            x[i, l, s * p:(s + 1) * p] @ weight.T + bias + pos[leads[l] * t_all + s]
            for l in range(n_leads) for s in slots
        ]))
    return torch.stack(out)


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


def run(backend, x, w, b, pos, mask, leads, grad):
    """Output and (dx, dW, db) of one backend, returned on the CPU."""
    dev = {"triton": KERNEL_DEVICE, "cuda": "cuda"}.get(backend, "cpu")
    x, w, b = (t.detach().to(dev, copy=True).requires_grad_() for t in (x, w, b))
    mask = None if mask is None else mask.to(dev)
    out = patch_embed(x, w, b, pos.to(dev), mask=mask, leads=leads, backend=backend)
    out.backward(grad.to(out))
    return out.detach().cpu(), (x.grad.cpu(), w.grad.cpu(), b.grad.cpu())


def err(a, b):
    return (a.double() - b.double()).abs().max().item()


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("mask_kind", ["none", "shared", "per-sample"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_patch_embed_parity(seed, backend, mask_kind, dtype):
    bsz, dim = 2, 40
    leads = [int(i) for i in torch.randperm(8)[:3]]  # a lead subset in random order
    x = torch.randn(bsz, 3, 2500)
    w, b = torch.randn(dim, 50) * 0.2, torch.randn(dim)
    pos = torch.randn(400, dim)
    mask = masks(bsz, mask_kind)
    ref = oracle(x, w, b, pos, mask, leads)
    g = torch.randn_like(ref)
    ref_grads = run("reference", x.double(), w.double(), b.double(), pos.double(), mask, leads, g.double())[1]
    assert err(run("reference", x.double(), w.double(), b.double(), pos.double(), mask, leads, g.double())[0], ref) < 1e-10
    cast = lambda *ts: [t.to(dtype) for t in ts]  # noqa: E731
    out, grads = run(backend, *cast(x, w, b), pos, mask, leads, g)
    base_out, base_grads = run("reference", *cast(x, w, b), pos, mask, leads, g)
    assert out.dtype == dtype and out.shape == ref.shape
    # FlashAttention convention: within 2x of the same-precision plain reference's error, plus one unit in
    # the last place at the tensor's scale.
    ulp = torch.finfo(dtype).eps
    assert err(out, ref) <= 2 * err(base_out, ref) + ulp * ref.abs().max().item()
    for name, a, base, r in zip(("dx", "dW", "db"), grads, base_grads, ref_grads):
        assert err(a, r) <= 2 * err(base, r) + ulp * r.abs().max().item(), name
    if mask is not None:  # hidden slots get exactly zero gradient
        hidden = (mask if mask.dim() == 2 else mask.expand(bsz, 50)).repeat_interleave(50, dim=1)
        assert (grads[0].transpose(0, 1)[:, hidden] == 0).all()


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
    enc.config.embed_backend = "triton"
    assert err(enc(x, mask=mask), ref) < 1e-5
