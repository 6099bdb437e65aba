"""Test set-up. Triton kernels run on the GPU when there is one, else on the CPU interpreter: the
variable must be set before anything imports a Triton kernel module."""
import os
import random

import pytest
import torch

GPU = torch.cuda.is_available()
if not GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture
def seed() -> int:
    """A fresh seed per test (inputs are new every run); printed, so a failure's report shows it."""
    value = random.SystemRandom().randrange(2**31)
    torch.manual_seed(value)
    print(f"seed={value}")
    return value


@pytest.fixture
def kernel_device() -> str:
    """Where the Triton kernels run in this session: 'cuda' with a GPU, else 'cpu' (interpreter)."""
    return "cuda" if GPU else "cpu"


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not GPU:
            item.add_marker(skip_gpu)
