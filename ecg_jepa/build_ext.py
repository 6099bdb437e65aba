"""Build the CUDA extension (``csrc/``) with ninja: ``python -m ecg_jepa.build_ext``.

Just-in-time (``torch.utils.cpp_extension.load``, cached per torch/CUDA version) on request or on first use
of ``backend="cuda"``; ahead of time with ``ECG_JEPA_BUILD_CUDA=1 pip install --no-build-isolation -e .``.
Architectures: ``TORCH_CUDA_ARCH_LIST`` (default ``8.0;9.0``). Without a CUDA toolkit or with a CPU-only
torch the build stops with a message that says what is missing; nothing else in the package needs it.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import torch

from .limits import FUSED_MAX_HEAD_DIM

DEFAULT_ARCHS = "8.0;9.0"
CSRC = Path(__file__).resolve().parent.parent / "csrc"
SOURCES = ("cropa_attention.cu", "patch_embed.cu", "ops.cpp")


def defines() -> list[str]:
    """Facts the C++ sources take from Python, where they are declared once (:mod:`ecg_jepa.limits`): the
    kernels' head-dim limit."""
    return [f"-DECG_JEPA_MAX_HEAD_DIM={FUSED_MAX_HEAD_DIM}"]


def cuda_flags() -> list[str]:
    """nvcc flags of every build (JIT, ahead of time, the CI's ptxas checks)."""
    return ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-lineinfo", *defines()]


def cxx_flags() -> list[str]:
    """Host-compiler flags of every build."""
    return ["-O3", *defines(), *fallback_include_flags()]


class BuildError(RuntimeError):
    """The extension cannot be built here; the message names what is missing."""


def cuda_home() -> str:
    """The CUDA toolkit: ``CUDA_HOME`` / ``CUDA_PATH``, /usr/local/cuda, or the folder above ``nvcc`` on PATH;
    the first that has both ``bin/nvcc`` and ``include/cuda_runtime_api.h``."""
    nvcc = shutil.which("nvcc")
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda",
                  str(Path(nvcc).resolve().parent.parent) if nvcc else None]
    for candidate in filter(None, candidates):
        if (Path(candidate) / "bin" / "nvcc").exists() and (Path(candidate) / "include" / "cuda_runtime_api.h").exists():
            return candidate
    raise BuildError("no CUDA toolkit found (nvcc and its headers): install one and set CUDA_HOME")


def fallback_include_flags() -> list[str]:
    """Host-compiler flags that add pip's CUDA headers (torch's CUDA 13 wheels: nvidia/cu13/include) *after*
    the toolkit's, for headers torch's include chain needs and a minimal toolkit lacks."""
    spec = importlib.util.find_spec("nvidia")
    flags = []
    for root in (spec.submodule_search_locations or []) if spec else []:
        if (Path(root) / "cu13" / "include").is_dir():
            flags += ["-idirafter", str(Path(root) / "cu13" / "include")]
    return flags


def check_prerequisites() -> str:
    """Raise :class:`BuildError` unless torch is a CUDA build, the toolkit exists and the sources are here."""
    if torch.version.cuda is None:
        raise BuildError(f"torch {torch.__version__} is a CPU-only build; install a CUDA build of torch")
    if not all((CSRC / s).exists() for s in SOURCES):
        raise BuildError(f"CUDA sources not found in {CSRC} (they come with a source checkout: pip install -e .)")
    return cuda_home()


def cache_dir() -> Path:
    root = Path(os.environ.get("ECG_JEPA_CACHE", Path.home() / ".cache" / "ecg_jepa"))
    return root / f"torch{torch.__version__.split('+')[0]}-cu{torch.version.cuda}"


def build(verbose: bool = False) -> Path:
    """JIT-build (or reuse) the extension and load its ops into ``torch.ops.ecg_jepa``; return the library."""
    home = check_prerequisites()
    os.environ["CUDA_HOME"] = home
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)
    import torch.utils.cpp_extension as cpp

    cpp.CUDA_HOME = home  # read at import time by torch; a process may have imported it before us
    out = cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "ecg_jepa_C.so").exists():
        print(f"ecg-jepa: building the CUDA extension for sm {os.environ['TORCH_CUDA_ARCH_LIST']} in {out} "
              "(first use only, about a minute)...", file=sys.stderr, flush=True)
    cpp.load(
        name="ecg_jepa_C", sources=[str(CSRC / s) for s in SOURCES], extra_cflags=cxx_flags(),
        extra_cuda_cflags=cuda_flags(), extra_include_paths=[str(CSRC)], build_directory=str(out),
        is_python_module=False, verbose=verbose,
    )
    return out / "ecg_jepa_C.so"


WIDE_SIDE_MARK = "// wide side"
"""Marks the source lines of a kernel's hot global accesses; ``ecg_jepa.kernel_report`` checks that the
SASS issues them 16 bytes wide."""


def wide_side_lines(source: Path) -> list[int]:
    """1-based line numbers of ``source`` that carry :data:`WIDE_SIDE_MARK`."""
    return [i for i, line in enumerate(source.read_text().splitlines(), start=1) if WIDE_SIDE_MARK in line]


def build_emulation(verbose: bool = False) -> Path:
    """Build (or reuse) the CUDA kernels' source compiled for the CPU (csrc/emulation.cpp, plain C++, no
    CUDA toolkit needed) and load its ops into ``torch.ops.ecg_jepa_emu``: the tests check the kernels'
    logic with it on machines without a GPU."""
    import torch.utils.cpp_extension as cpp

    out = cache_dir().with_name(cache_dir().name + "-emulation")
    out.mkdir(parents=True, exist_ok=True)
    cpp.load(name="ecg_jepa_emu", sources=[str(CSRC / "emulation.cpp")], extra_cflags=["-O2", *defines()],
             extra_include_paths=[str(CSRC)], build_directory=str(out), is_python_module=False, verbose=verbose)
    return out / "ecg_jepa_emu.so"


_loaded = {"done": False}


def why_unavailable() -> str | None:
    """None when the extension is loaded, installed ahead of time or can be built here; else what is missing."""
    if _loaded["done"] or importlib.util.find_spec("ecg_jepa._C") is not None:
        return None
    try:
        check_prerequisites()
    except BuildError as e:
        return f"cannot build the CUDA extension: {e}"
    return None


def load() -> None:
    """Make the extension's ops exist in ``torch.ops.ecg_jepa`` (the ahead-of-time module, else the JIT
    build, building it if needed), once per process."""
    if _loaded["done"]:
        return
    if importlib.util.find_spec("ecg_jepa._C") is not None:
        import ecg_jepa._C  # noqa: F401  (registers the ops)
    else:
        build()
    _loaded["done"] = True


def main() -> int:
    try:
        lib = build(verbose="-v" in sys.argv)
    except BuildError as e:
        print(f"ecg-jepa: cannot build the CUDA extension: {e}", file=sys.stderr)
        return 1
    print(f"built {lib} for sm {os.environ['TORCH_CUDA_ARCH_LIST']} (ops: torch.ops.ecg_jepa.cropa_cuda_fwd, "
          "cropa_cuda_bwd, patch_embed_cuda, patch_embed_cuda_dx)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
