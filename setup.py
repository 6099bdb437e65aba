"""Build script. ``kernels/`` (Triton) is installed as ``ecg_jepa.kernels`` through ``package_dir``,
never as a top-level ``kernels`` module (that name belongs to an unrelated PyPI package).

The CUDA extension (``csrc/`` -> ``ecg_jepa._C``) is built ahead of time only when asked:
``ECG_JEPA_BUILD_CUDA=1 pip install --no-build-isolation -e .`` (it needs the installed CUDA torch);
otherwise it is built just in time on first use, or by ``python -m ecg_jepa.build_ext``.
"""
import os

from setuptools import setup

ext_modules, cmdclass = [], {}
if os.environ.get("ECG_JEPA_BUILD_CUDA") == "1":
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    from ecg_jepa.build_ext import CUDA_FLAGS, DEFAULT_ARCHS, SOURCES, cuda_home, fallback_include_flags

    os.environ["CUDA_HOME"] = cuda_home()
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)
    ext_modules = [
        CUDAExtension(
            "ecg_jepa._C",
            [os.path.join("csrc", s) for s in SOURCES],
            include_dirs=[os.path.abspath("csrc")],
            extra_compile_args={"cxx": ["-O3", *fallback_include_flags()], "nvcc": CUDA_FLAGS},
        )
    ]
    cmdclass = {"build_ext": BuildExtension}

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
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
