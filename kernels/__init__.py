"""Triton kernels, installed as ``ecg_jepa.kernels``. Importing this package compiles nothing and
touches no GPU driver: kernels are JIT-compiled on their first launch."""
