"""The README's Python code blocks run as written (in a fresh folder), so they cannot rot."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_python_examples():
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {"__name__": "__readme__"})


def test_the_layout_rule_holds():
    """The README's layout rule, checked against the tree: every op under ecg_jepa/ops/ is named in it and
    has its kernels, launchers, tests and benchmark where the rule says; every kernel file belongs to an op."""
    root = README.parent
    ops = sorted(p.name for p in (root / "ecg_jepa" / "ops").iterdir() if (p / "__init__.py").exists())
    layout = README.read_text().split("## Layout", 1)[1]
    assert ops and all(f"`{op}`" in layout for op in ops)
    for op in ops:
        assert list((root / "kernels").glob(f"{op}*.py")) and list((root / "csrc").glob(f"{op}*.cu")), op
        assert all((root / "ecg_jepa" / "ops" / op / f).exists() for f in ("triton.py", "cuda.py", "fused.py")), op
        assert (root / "tests" / f"test_{op}.py").exists() and (root / "benchmarks" / f"bench_{op}.py").exists(), op
    kernel_files = [p for p in (root / "kernels").glob("*.py") if p.name != "__init__.py"]
    kernel_files += list((root / "csrc").glob("*.cu"))
    assert all(any(p.name.startswith(op) for op in ops) for p in kernel_files), kernel_files
