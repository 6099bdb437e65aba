"""Offline report of every kernel of the package, compiled for the GPUs we target, on a machine without one:
``python -m ecg_jepa.kernel_report [--json FILE] [--check] [--arch 90 80]``.

Triton kernels are compiled with ``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))``
from the very arguments their launchers pass (CPU tensors of the benchmark shapes, laid out as the model
lays them out), run through the JIT's own binder, so the specializations (16-byte-aligned pointers,
integers divisible by 16) are those a real launch applies: the report describes code that runs. CUDA
kernels (``csrc/``) are compiled with nvcc to cubins. Both are read with the ``cuobjdump`` / ``nvdisasm``
that ship inside triton's package.

One row per kernel, configuration and architecture: registers, spill bytes (stack + local), shared memory
(static + dynamic), tensor-core instructions (HGMMA on sm_90, HMMA), ldmatrix (LDSM) and local-memory
(LDL/STL) instructions, the global accesses of the kernel's
wide side (its tile loads; for the patch embedding the token rows) by width, and the CTAs per SM those
resources allow. ``--check`` exits 1 on any spill or local-memory access, on a wide-side access narrower than 16 bytes for
bf16/fp16 at a head dim (embedding width) of 32 or more, or on a 16-bit CUDA kernel without tensor-core
instructions.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"  # compile for the GPU, whatever the caller's environment says

import torch  # noqa: E402

from .limits import SM_RESOURCES, SMEM_PER_CTA, TRITON_FP32_MAX_HEAD_DIM  # noqa: E402
from .ops.registry import dtype_name  # noqa: E402

SHAPE = dict(heads=16, leads=8, slots=50)  # the paper's attention shape (batch does not change the code)
WIDTH = {"": 4, ".64": 8, ".128": 16, ".U8": 1, ".S8": 1, ".U16": 2, ".S16": 2}


@dataclass
class Row:
    kernel: str
    config: str
    arch: int
    registers: int
    spill_bytes: int
    shared_bytes: int
    threads: int
    ctas_per_sm: int
    tensor_core: int
    wide_side: dict = field(default_factory=dict)  # "LDG.E.128" -> count, for the wide-side source lines
    narrowest_wide: int | None = None  # bytes
    widest_load: int = 0
    needs_wide: bool = False  # 16-bit data with rows of >= 32 elements: the wide side must be 16-byte
    needs_tensor_cores: bool = False  # 16-bit CUDA attention and embedding kernels: HMMA expected
    ldsm: int = 0  # LDSM (ldmatrix) instructions
    local_accesses: int = 0  # LDL / STL instructions (local memory)

    @property
    def ok(self) -> bool:
        wide = not self.needs_wide or (self.narrowest_wide is not None and self.narrowest_wide >= 16)
        return (self.spill_bytes == 0 and self.local_accesses == 0 and wide
                and (self.tensor_core > 0 or not self.needs_tensor_cores))


def _tools() -> Path:
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin"


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def _ctas_per_sm(arch: int, regs: int, static: int, dynamic: int, threads: int) -> int:
    """CTAs per SM the registers, shared memory (static + dynamic; the system reserves 1 KB per CTA, which
    sm_90's cubins already report as static) and threads allow."""
    max_regs, max_smem, max_threads, max_ctas = SM_RESOURCES[arch]
    warps = -(-threads // 32)
    warp_regs = -(-max(regs, 1) * 32 // 256) * 256  # allocated per warp in units of 256
    by_regs = (max_regs // warp_regs) // warps
    by_smem = max_smem // (dynamic + max(static, 1024))
    return max(0, min(by_regs, by_smem, max_threads // threads, max_ctas))


def _access_widths(sass: str, lines: set[tuple[str, int]]) -> tuple[dict, int]:
    """Counts of global loads/stores (by opcode with width) issued from the given (file, line)s, and the
    widest global load of the whole kernel in bytes."""
    where, counts, widest = None, {}, 0
    for text in sass.splitlines():
        m = re.search(r'//## File "([^"]+)", line (\d+)', text)
        if m:
            where = (Path(m.group(1)).name, int(m.group(2)))
            continue
        m = re.search(r"\b(LDGSTS|LDG|STG)\.E((?:\.BYPASS|\.LTC\d+B|\.EL|\.LU|\.EF|\.STRONG\.\w+|\.CONSTANT)*)"
                      r"(\.128|\.64|\.U8|\.S8|\.U16|\.S16)?\b", text)
        if not m:
            continue
        width = m.group(3) or ""
        if m.group(1) != "STG":
            widest = max(widest, WIDTH[width])
        if where in lines:
            key = f"{m.group(1)}.E{width}"
            counts[key] = counts.get(key, 0) + 1
    return counts, widest


def _read_cubin(cubin: Path, function: str | None = None) -> list[tuple[str, int, int, int, str]]:
    """(function, registers, stack + local bytes, static shared bytes, SASS with line info) per function."""
    tools = _tools()
    usage = _run(str(tools / "cuobjdump"), "-res-usage", str(cubin))
    sass = _run(str(tools / "nvdisasm"), "-g", "-c", str(cubin))
    out = []
    for m in re.finditer(r"Function (\S+):\s*\n\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", usage):
        name = m.group(1)
        if function is not None and name != function:
            continue
        start = sass.find(f".text.{name}:")
        end = sass.find(".text.", start + 1)
        body = sass[start: end if end > 0 else None]
        out.append((name, int(m.group(2)), int(m.group(3)) + int(m.group(5)), int(m.group(4)), body))
    return out


def _helper_lines(fn) -> set[tuple[str, int]]:
    """(file, line) of every line of a @triton.jit helper: the SASS attributes an access to some line of
    the function that issues it (the compiler moves and merges instructions within it)."""
    src, first = inspect.getsourcelines(fn.fn)
    name = Path(inspect.getsourcefile(fn.fn)).name
    return {(name, first + i) for i in range(len(src))}


def _specialize(kernel, args: tuple, kwargs: dict, arch: int):
    """(target, options, signature, constexprs, attrs) exactly as the JIT derives them for a launch."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound_args, specialization, options = binder(*args, **kwargs)
    return (target, *kernel._pack_args(backend, kwargs, bound_args, specialization, options))


def variant_key(kernel, args: tuple, kwargs: dict, arch: int = 90) -> str:
    """What decides whether a launch with these arguments compiles a new variant of ``kernel``: its
    signature, compile-time constants, specialization attributes and options."""
    _, options, signature, constexprs, attrs = _specialize(kernel, args, kwargs, arch)
    return repr((sorted(signature.items()), sorted(constexprs.items()), sorted(attrs.items()), sorted(options.__dict__.items())))


def _compile_triton(kernel, args: tuple, kwargs: dict, arch: int):
    """Compile as the JIT would for these arguments: same binder, same specializations."""
    import triton
    from triton.compiler import ASTSource

    target, options, signature, constexprs, attrs = _specialize(kernel, args, kwargs, arch)
    return triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target, options=options.__dict__)


def _triton_row(kernel, args, kwargs, arch: int, config: str, wide: set, needs_wide: bool) -> Row:
    compiled = _compile_triton(kernel, args, kwargs, arch)
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "k.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        name, regs, spill, static_smem, sass = _read_cubin(cubin)[0]
    counts, widest = _access_widths(sass, wide)
    shared = static_smem + compiled.metadata.shared
    threads = kwargs.get("num_warps", 4) * 32
    return Row(kernel.fn.__name__, config, arch, regs, spill, shared, threads,
               _ctas_per_sm(arch, regs, static_smem, compiled.metadata.shared, threads),
               wide_side=counts, narrowest_wide=_narrowest(counts), widest_load=widest, needs_wide=needs_wide,
               **_sass_counts(sass))


def _sass_counts(sass: str) -> dict:
    """Tensor-core, ldmatrix and local-memory instructions of a kernel's SASS (Row fields)."""
    return dict(tensor_core=sass.count("HGMMA") + sass.count("HMMA"), ldsm=len(re.findall(r"\bLDSM\b", sass)),
                local_accesses=len(re.findall(r"\b(?:LDL|STL)\b", sass)))


def _narrowest(counts: dict) -> int | None:
    widths = [WIDTH[key.split(".E", 1)[1]] for key in counts]
    return min(widths) if widths else None


def attention_cases(arch: int):
    """(kernel, args, kwargs, config, wide-side lines, needs_wide) for the CroPA kernels at the benchmark
    configurations for sm_``arch``: bf16 d=48 at every slot tile; every
    dtype at d = 48, 64, 128 with the paper's T."""
    from ecg_jepa.kernels.cropa_common import load_rows, store_rows
    from ecg_jepa.ops.cropa import triton as launch

    wide = _helper_lines(load_rows) | _helper_lines(store_rows)
    combos = [(torch.bfloat16, 48, t) for t in (10, 23, 50)]
    combos += [(dt, d, 50) for dt in (torch.bfloat16, torch.float16, torch.float32) for d in (48, 64, 128)
               if (dt, d) != (torch.bfloat16, 48)]
    h, n_leads = SHAPE["heads"], SHAPE["leads"]
    for dtype, d, t in combos:
        qkv = torch.empty(1, n_leads * t, 3, h, d, dtype=dtype)  # as CroPAAttention lays them out
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
        lse = torch.empty(1, h, n_leads * t)
        cfg = launch.config(n_leads, t, d, dtype, arch)
        desc = f"{dtype_name(dtype)} d={d} T={t}"
        needs = dtype != torch.float32 and d >= 32
        kernel, _, args, kwargs = launch.fwd_launch(q, k, v, out, lse, n_leads, d ** -0.5, cfg)
        yield kernel, args, kwargs, f"{desc} tile {cfg.block_t} warps {cfg.num_warps}", wide, needs
        grads = [torch.empty_like(out) for _ in range(4)]
        kernel, _, args, kwargs = launch.bwd_launch(grads[0], q, k, v, out, lse, torch.empty_like(lse), *grads[1:],
                                                    n_leads, d ** -0.5, cfg)
        yield kernel, args, kwargs, f"{desc} tile {cfg.bwd_block_t} warps {cfg.bwd_num_warps}", wide, needs


def column_cases():
    """The split backend's column kernels (``kernels/cropa_col.py``) and 16-bit row kernels
    (``kernels/cropa_row.py``) at the paper's head dim for 8 and 12
    leads and every slot count of the goal shapes, and at d = 64, 128 (every dtype the kernels take at
    that head dim); inputs laid out as
    the model lays them out, the output and gradients as the row pass leaves them. Wide side: the row tiles."""
    from ecg_jepa.kernels import cropa_col
    from ecg_jepa.kernels.cropa_common import load_rows, store_rows
    from ecg_jepa.ops.cropa import split

    wide = _helper_lines(cropa_col._tile) | _helper_lines(cropa_col._store_tile)
    row_wide = _helper_lines(load_rows) | _helper_lines(store_rows)
    combos = [(torch.bfloat16, 48, 8, t) for t in (17, 23, 50)] + [(torch.bfloat16, 48, 12, 50)]
    combos += [(dt, d, 8, 50) for dt in (torch.bfloat16, torch.float16, torch.float32) for d in (48, 64, 128)
               if (dt, d) != (torch.bfloat16, 48) and (dt != torch.float32 or d <= TRITON_FP32_MAX_HEAD_DIM)]
    h = SHAPE["heads"]
    for dtype, d, n_leads, t in combos:
        qkv = torch.empty(1, n_leads * t, 3, h, d, dtype=dtype)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out, grad_out, dq, dk, dv = (split.token_major(1, h, n_leads * t, d, q) for _ in range(5))
        lse = torch.empty(1, n_leads, h, split.padded_slots(t))
        block_t = split.column_launch(q, n_leads)[0]
        desc = f"{dtype_name(dtype)} d={d} L={n_leads} T={t} slots {block_t}"
        needs = dtype != torch.float32 and d >= 32
        kernel, _, args, kwargs = split.column_fwd_launch(q, k, v, out, lse, n_leads, d ** -0.5)
        yield kernel, args, kwargs, desc, wide, needs
        kernel, _, args, kwargs = split.column_bwd_launch(grad_out, q, k, v, out, lse, dq, dk, dv, n_leads, d ** -0.5)
        yield kernel, args, kwargs, desc, wide, needs
        if dtype == torch.float32:  # the row pass's Triton kernels are 16-bit only (split.triton_rows)
            continue
        desc = f"{dtype_name(dtype)} d={d} L={n_leads} T={t} tile {split.row_block(t)}"
        kernel, _, args, kwargs = split.row_fwd_launch(q, k, v, out, lse, n_leads, d ** -0.5)
        yield kernel, args, kwargs, desc, row_wide, needs
        kernel, _, args, kwargs = split.row_bwd_launch(grad_out, q, k, v, out, lse, dq, dk, dv, n_leads, d ** -0.5)
        yield kernel, args, kwargs, desc, row_wide, needs


def patch_embed_cases():
    """The patch-embedding kernels (vit-b width 768 and tiny's 64; 27 of 50 slots visible); wide side:
    the token rows (written by the forward, read by dx)."""
    from ecg_jepa.kernels import patch_embed as kernels
    from ecg_jepa.ops.patch_embed import triton as launch

    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for dim in (768, 64):
            x = torch.empty(1, 8, 2500, dtype=dtype)
            w, bias = torch.empty(dim, 50, dtype=dtype), torch.empty(dim, dtype=dtype)
            pos = torch.empty(400, dim)
            vis = torch.empty(1, 27, dtype=torch.int32)
            lead_ids = torch.empty(8, dtype=torch.int32)
            out = torch.empty(1, 8 * 27, dim, dtype=dtype)
            desc = f"{dtype_name(dtype)} D={dim}"
            needs = dtype != torch.float32
            kernel, _, args, kwargs = launch.fwd_launch(x, w, bias, pos, vis, lead_ids, out)
            yield kernel, args, kwargs, desc, _helper_lines(kernels.store_tokens), needs
            kernel, _, args, kwargs = launch.dx_launch(out, w, vis, torch.empty_like(x))
            yield kernel, args, kwargs, desc, _helper_lines(kernels.load_tokens), needs


def cuda_rows(archs: tuple[int, ...]) -> list[Row]:
    """Every kernel of csrc/, compiled by nvcc for each arch (skipped without a toolkit)."""
    from . import build_ext

    try:
        nvcc = str(Path(build_ext.cuda_home()) / "bin" / "nvcc")
    except build_ext.BuildError:
        return []
    rows = []
    # The marked lines live in the headers the kernels include (block.cuh) as well as in the .cu files.
    wide = {(f.name, line) for f in build_ext.CSRC.iterdir() if f.suffix in (".cu", ".cuh")
            for line in build_ext.wide_side_lines(f)}
    for source in sorted(build_ext.CSRC.glob("*.cu")):
        for arch in archs:
            with tempfile.TemporaryDirectory() as tmp:
                cubin = Path(tmp) / "k.cubin"
                subprocess.run([nvcc, *build_ext.cuda_flags(), f"-arch=sm_{arch}", "-cubin", "-I", str(build_ext.CSRC),
                                "-o", str(cubin), str(source)], capture_output=True, text=True, check=True)
                for name, regs, spill, shared, sass in _read_cubin(cubin):
                    counts, widest = _access_widths(sass, wide)
                    label = _demangle(name)
                    dynamic, at = _paper_shape_smem(label, arch)
                    threads = _max_threads(cubin, name)
                    if "cropa_fwd" in label and 2 * dynamic <= SMEM_PER_CTA[(arch // 10, arch % 10)]:
                        threads = min(threads, 256)  # the launcher's 8 warps where two CTAs share an SM
                    rows.append(Row(label, source.name + (f" (smem at {at})" if at else ""), arch, regs, spill,
                                    shared + dynamic, threads, _ctas_per_sm(arch, regs, shared, dynamic, threads),
                                    wide_side=counts, narrowest_wide=_narrowest(counts), widest_load=widest,
                                    needs_wide="__half" in label or "bfloat16" in label,
                                    needs_tensor_cores=("__half" in label or "bfloat16" in label)
                                    and "delta" not in label, **_sass_counts(sass)))
    return rows


def _paper_shape_smem(label: str, arch: int) -> tuple[int, str]:
    """The dynamic shared memory of a CUDA attention CTA at the paper's shape (8 leads, 50 slots; d = 48,
    or the kernel instance's own head dim, 16·kD16), which decides its CTAs per SM, and that shape in
    words (the patch-embedding kernels' depends on the mask: 0 here)."""
    from .ops.cropa.cuda import plan

    if "cropa_fwd" not in label and "cropa_bwd" not in label:
        return 0, ""
    size = 4 if "<float>" in label else 2
    m = re.search(r"cropa_(?:fwd|bwd)_kernel<[^,>]+, (\d+)>", label)
    d = 16 * int(m.group(1)) if m else 48
    fwd_bytes, _, bwd_bytes = plan(SHAPE["leads"], SHAPE["slots"], d, size, SMEM_PER_CTA[(arch // 10, arch % 10)])
    at = f"L{SHAPE['leads']} T{SHAPE['slots']} d{d}"
    if "cropa_fwd" in label:
        return fwd_bytes, at + ("" if fwd_bytes else ": does not fit")
    return bwd_bytes, at


def _max_threads(cubin: Path, function: str) -> int:
    """The block size a kernel declares with __launch_bounds__ (EIATTR_MAX_THREADS), 128 if it declares none."""
    elf = _run(str(_tools() / "cuobjdump"), "-elf", str(cubin))
    # The section's contents (a line of their own), not its entry in the section table.
    start = re.search(rf"^\.nv\.info\.{re.escape(function)}\s*$", elf, re.M)
    section = elf[start.end():].split("\n.nv.", 1)[0] if start else ""
    m = re.search(r"EIATTR_MAX_THREADS\s*\n\s*Format:.*\n\s*Value:\s*0x([0-9a-f]+)", section)
    return int(m.group(1), 16) if m else 128


def _demangle(name: str) -> str:
    """'_ZN8ecg_jepa...cropa_fwd_kernelI13__nv_bfloat16E...' -> 'cropa_fwd_kernel<__nv_bfloat16>'."""
    tool = shutil.which("c++filt")
    full = subprocess.run([tool, name], capture_output=True, text=True).stdout.strip() if tool else ""
    m = re.search(r"(\w+)<([^>]*)>\(", full)
    return f"{m.group(1)}<{m.group(2)}>" if m else (full.split("(")[0].split("::")[-1] or name)


def build(archs: tuple[int, ...] = (90, 80), cuda: bool = True) -> list[Row]:
    rows = []
    for arch in archs:
        for cases in (attention_cases(arch), column_cases(), patch_embed_cases()):
            for kernel, args, kwargs, desc, wide, needs in cases:
                rows.append(_triton_row(kernel, args, kwargs, arch, desc, wide, needs))
    if cuda:
        rows += cuda_rows(archs)
    return rows


def table(rows: list[Row]) -> str:
    head = ["kernel", "config", "sm", "regs", "spill B", "smem B", "threads", "CTAs/SM", "tensor-core ops", "LDSM",
            "LDL/STL", "wide-side accesses", "widest load B", "ok"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        wide = ", ".join(f"{k}×{v}" for k, v in sorted(r.wide_side.items())) or "—"
        lines.append("| " + " | ".join(map(str, [r.kernel, r.config, r.arch, r.registers, r.spill_bytes, r.shared_bytes,
                                                  r.threads, r.ctas_per_sm, r.tensor_core, r.ldsm,
                                                  r.local_accesses, wide, r.widest_load,
                                                  "yes" if r.ok else "**no**"])) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ecg_jepa.kernel_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[90, 80], choices=sorted(SM_RESOURCES),
                        help="compute capabilities to compile for (90: H100, 80: A100)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON to this file")
    parser.add_argument("--no-cuda", action="store_true", help="only the Triton kernels")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 on a spill or a wide-side access narrower than 16 bytes (16-bit data, rows ≥ 32)")
    args = parser.parse_args(argv)
    rows = build(tuple(args.arch), cuda=not args.no_cuda)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=1))
    bad = [r for r in rows if not r.ok]
    if bad:
        print(f"\n{len(bad)} row(s) fail: " + "; ".join(f"{r.kernel} {r.config} sm_{r.arch}" for r in bad), file=sys.stderr)
    return 1 if (args.check and bad) else 0


if __name__ == "__main__":
    sys.exit(main())
