"""pytest-benchmark view of the suite: ``pytest benchmarks/ --benchmark-only``. Each bench module lists
its parameters in ``BENCH_PARAMS``; skips are ``unittest.SkipTest`` (so the modules need no pytest)."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_generate_tests(metafunc):
    for name, values in getattr(metafunc.module, "BENCH_PARAMS", {}).items():
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, values)
