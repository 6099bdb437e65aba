"""No import cycle: every module of the package imports in a fresh interpreter, in more than one order,
without touching a GPU driver; and the graph of the package's imports (lazy ones inside functions
included) has no cycle, with :mod:`ecg_jepa.limits` a leaf below the build and the ops."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Package name -> source folder (setup.py's package_dir: kernels/ and benchmarks/ install under ecg_jepa).
FOLDERS = {"ecg_jepa": ROOT / "ecg_jepa", "ecg_jepa.kernels": ROOT / "kernels", "ecg_jepa.benchmarks": ROOT / "benchmarks"}
NOT_IMPORTED = {"ecg_jepa.__main__"}  # runs the CLI


def sources() -> dict[str, tuple[Path, str]]:
    """Module name -> (source file, the package its relative imports start from), found on disk."""
    found = {}
    for package, folder in FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if "__pycache__" in parts or (package == "ecg_jepa" and parts[0] in ("kernels", "benchmarks")):
                continue
            if parts[-1] == "__init__":
                name = ".".join((package, *parts[:-1]))
                found[name] = (path, name)
            else:
                name = ".".join((package, *parts))
                found[name] = (path, name.rsplit(".", 1)[0])
    return {name: where for name, where in found.items() if name not in NOT_IMPORTED}


def imports_of(path: Path, package: str, names: set[str]) -> set[str]:
    """The package's modules that the source ``path`` imports anywhere (module level or inside a function),
    relative imports resolved from ``package``; its own ancestor packages left out (Python imports those
    before the module itself, so they cannot close a cycle)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found |= {f"{base}.{a.name}" for a in node.names} | {base}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    module = path.stem if path.stem != "__init__" else ""
    me = f"{package}.{module}" if module else package
    return {m for m in found & names if m != me and not me.startswith(m + ".")}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def import_graph() -> dict[str, set[str]]:
    found = sources()
    return {name: imports_of(path, package, set(found)) for name, (path, package) in found.items()}


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert {"ecg_jepa.limits", "ecg_jepa.build_ext", "ecg_jepa.kernel_report", "ecg_jepa.ops.cropa.cuda",
            "ecg_jepa.kernels.cropa_fwd", "ecg_jepa.benchmarks.suite", "ecg_jepa.train.pretrain"} <= set(graph)
    assert graph["ecg_jepa.ops.cropa.cuda"] >= {"ecg_jepa.build_ext", "ecg_jepa.limits"}  # the graph sees imports
    assert cycles(graph) == []


def test_the_cycle_check_has_teeth():
    """The build importing the head-dim limit back from the ops (as it once did, inside a function) is a cycle."""
    graph = import_graph()
    graph["ecg_jepa.build_ext"] = graph["ecg_jepa.build_ext"] | {"ecg_jepa.ops.cropa"}
    assert any({"ecg_jepa.build_ext", "ecg_jepa.ops.cropa"} <= set(c) for c in cycles(graph))


def test_limits_is_a_leaf_and_the_build_sits_on_it():
    """ecg_jepa.limits imports nothing at all (not torch, not the package); ecg_jepa.build_ext nothing of the
    package but it (and the extension it builds)."""
    tree = ast.parse((ROOT / "ecg_jepa" / "limits.py").read_text())
    assert [n.module for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))] == ["__future__"]
    assert import_graph()["ecg_jepa.build_ext"] <= {"ecg_jepa.limits"}


IMPORT_ALL = r"""
import importlib, sys, traceback
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:
        print(f"importing {name} failed:\n{traceback.format_exc()}")
        sys.exit(1)
import torch
if torch.cuda.is_initialized():
    print("an import initialised CUDA")
    sys.exit(1)
"""


@pytest.mark.parametrize("order", ["sorted", "reversed"])
def test_every_module_imports_in_a_fresh_interpreter(order):
    """A fresh interpreter imports every module in turn (a cycle entered from the wrong end fails with an
    ImportError on a partly initialised module); no import initialises CUDA."""
    names = sorted(sources())
    names = names[::-1] if order == "reversed" else names
    result = subprocess.run([sys.executable, "-c", IMPORT_ALL, *names], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
