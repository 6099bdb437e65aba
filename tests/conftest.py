"""Test set-up. Triton kernels run on the CPU interpreter unless a GPU is present: the variable must be
set before anything imports a Triton kernel module."""
import os
import random

import pytest

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture
def seed() -> int:
    """A fresh seed per test (inputs are new every run); printed, so a failure's report shows it."""
    value = random.SystemRandom().randrange(2**31)
    torch.manual_seed(value)
    print(f"seed={value}")
    return value


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
