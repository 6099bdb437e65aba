"""Build script. ``kernels/`` (Triton) and ``benchmarks/`` (the suite ``ecg-jepa bench`` runs) are installed
as ``ecg_jepa.kernels`` and ``ecg_jepa.benchmarks`` through ``package_dir``, never as top-level modules
(``kernels`` belongs to an unrelated PyPI package).

The CUDA extension (``csrc/`` -> ``ecg_jepa._C``) is built ahead of time only when asked:
``ECG_JEPA_BUILD_CUDA=1 pip install --no-build-isolation -e .`` (it needs the installed CUDA torch);
otherwise it is built just in time on first use, or by ``python -m ecg_jepa.build_ext``.
"""
import os

from setuptools import setup

ext_modules, cmdclass = [], {}
if os.environ.get("ECG_JEPA_BUILD_CUDA") == "1":
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    from ecg_jepa.build_ext import DEFAULT_ARCHS, SOURCES, cuda_flags, cuda_home, cxx_flags

    os.environ["CUDA_HOME"] = cuda_home()
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)
    ext_modules = [
        CUDAExtension(
            "ecg_jepa._C",
            [os.path.join("csrc", s) for s in SOURCES],
            include_dirs=[os.path.abspath("csrc")],
            extra_compile_args={"cxx": cxx_flags(), "nvcc": cuda_flags()},
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
        "ecg_jepa.ops.cropa",
        "ecg_jepa.ops.patch_embed",
        "ecg_jepa.kernels",
        "ecg_jepa.benchmarks",
    ],
    package_dir={"ecg_jepa": "ecg_jepa", "ecg_jepa.kernels": "kernels", "ecg_jepa.benchmarks": "benchmarks"},
    package_data={"ecg_jepa.ops.cropa": ["measured.json"]},  # auto's GPU order (ops/cropa/measured.py)
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
