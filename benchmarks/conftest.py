"""pytest-benchmark view of the suite: ``pytest benchmarks/ --benchmark-only``."""
import os

os.environ.setdefault("TRITON_INTERPRET", "0" if os.environ.get("CUDA_VISIBLE_DEVICES") != "" else "1")
