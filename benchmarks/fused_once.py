"""Run every fused backend (Triton, CUDA and split attention; Triton and CUDA patch embedding) forward and
backward once on a few small shapes: the program ``compute-sanitizer`` watches in ``benchmarks/gpu_check.sh``."""
from __future__ import annotations

import torch

from ecg_jepa import cropa_attention, patch_embed


def main() -> int:
    for backend in ("triton", "cuda", "split"):
        for n_leads, t, d, dtype in ((3, 7, 48, torch.bfloat16), (8, 50, 48, torch.float16), (1, 5, 128, torch.float32)):
            q, k, v = (torch.randn(2, 2, n_leads * t, d, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
            cropa_attention(q, k, v, n_leads, backend=backend).sum().backward()
        if backend == "split":
            continue
        x = torch.randn(2, 8, 2500, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        w = torch.randn(64, 50, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        b = torch.randn(64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        mask = torch.arange(50, device="cuda") % 3 == 0
        patch_embed(x, w, b, torch.randn(400, 64, device="cuda"), mask=mask, backend=backend).sum().backward()
    torch.cuda.synchronize()
    print("fused backends ran forward and backward")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
