"""Probe (first H200 call, before the split backend exists): the CroPA row pass alone with each of PyTorch's
fused attention kernels on the copy-free (B*L, H, T, d) view of a packed qkv, and a plain-torch column pass,
beside sdpa + boolean mask and dense flash, at the four goal shapes. bf16, do_bench medians in ms."""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench

H, D = 16, 48
SHAPES = [(64, 8, 50), (64, 8, 23), (128, 8, 17), (64, 12, 50)]


def packed(B, L, T):
    qkv = torch.randn(B, L * T, 3, H, D, device="cuda", dtype=torch.bfloat16).requires_grad_()
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, H, N, d) views, as the model makes them
    return qkv, q, k, v


def rows(x, L, T):  # (B, H, L*T, d) -> (B*L, H, T, d), free
    B = x.shape[0]
    return x.unflatten(2, (L, T)).transpose(1, 2).flatten(0, 1)


def cols_torch(q, k, v, L, T):  # column pass in plain torch, self excluded
    qc, kc, vc = (x.unflatten(2, (L, T)).transpose(2, 3) for x in (q, k, v))  # (B, H, T, L, d)
    s = (qc @ kc.transpose(-1, -2)).float() * D ** -0.5
    s = s.masked_fill(torch.eye(L, dtype=torch.bool, device=q.device), float("-inf"))
    lse = s.logsumexp(-1)
    return ((s - lse[..., None]).exp().to(q.dtype) @ vc), lse


def t(fn):
    return do_bench(fn, warmup=10, rep=60)


def main():
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    for B, L, T in SHAPES:
        qkv, q, k, v = packed(B, L, T)
        N = L * T
        idx = torch.arange(N, device="cuda")
        lead, slot = idx // T, idx % T
        mask = (lead[:, None] == lead[None]) | (slot[:, None] == slot[None])
        g = torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16)
        res = {}

        def fb(f):
            def run():
                out = f()
                torch.autograd.grad(out, qkv, g if out.shape == g.shape else torch.randn_like(out))
            return run

        with torch.no_grad():
            res["sdpa+mask fwd"] = t(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
            res["dense fwd"] = t(lambda: F.scaled_dot_product_attention(q, k, v))
        res["sdpa+mask f+b"] = t(fb(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)))
        res["dense f+b"] = t(fb(lambda: F.scaled_dot_product_attention(q, k, v)))
        qr, kr, vr = rows(q, L, T), rows(k, L, T), rows(v, L, T)
        for name, be in [("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                         ("cudnn", SDPBackend.CUDNN_ATTENTION)]:
            try:
                with sdpa_kernel(be):
                    with torch.no_grad():
                        res[f"row {name} fwd"] = t(lambda: F.scaled_dot_product_attention(qr, kr, vr))
                    res[f"row {name} f+b"] = t(fb(lambda: F.scaled_dot_product_attention(qr, kr, vr)))
            except Exception as e:  # noqa: BLE001
                res[f"row {name}"] = f"fails: {str(e).splitlines()[0][:80]}"
        try:
            res["row flash+lse fwd (raw op)"] = t(lambda: torch.ops.aten._scaled_dot_product_flash_attention(
                qr.detach(), kr.detach(), vr.detach(), 0.0, False, False))
        except Exception as e:  # noqa: BLE001
            res["row flash+lse raw"] = f"fails: {str(e).splitlines()[0][:80]}"
        with torch.no_grad():
            res["col torch fwd"] = t(lambda: cols_torch(q, k, v, L, T))
        res["col torch f+b"] = t(fb(lambda: cols_torch(q, k, v, L, T)[0]))
        print(f"B{B} L{L} T{T}:", flush=True)
        for key, val in res.items():
            print(f"  {key:28s} {val if isinstance(val, str) else f'{val:.3f} ms'}", flush=True)


if __name__ == "__main__":
    main()
