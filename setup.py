"""Build script. ``kernels/`` (Triton) is installed as ``ecg_jepa.kernels`` through ``package_dir``,
never as a top-level ``kernels`` module (that name belongs to an unrelated PyPI package)."""
from setuptools import setup

setup(
    packages=[
        "ecg_jepa",
        "ecg_jepa.ops",
        "ecg_jepa.model",
        "ecg_jepa.data",
        "ecg_jepa.train",
        "ecg_jepa.eval",
        "ecg_jepa.kernels",
    ],
    package_dir={"ecg_jepa": "ecg_jepa", "ecg_jepa.kernels": "kernels"},
)
