"""``ecg-jepa bench --quick``: a smoke check of the benchmark suite (no timing assertions), on the GPU
when there is one, else on the CPU."""
import json

import torch

from ecg_jepa.cli import main


def test_bench_quick_writes_results(tmp_path, capsys):
    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| attention |" in out and "| patch embed |" in out and "| train step |" in out
    assert "| shard loader |" in out and "ECG/s" in out
    (result,) = tmp_path.glob("bench-*.json")
    data = json.loads(result.read_text())
    assert data["machine"]["torch"] and data["machine"]["commit"]
    rows = {(r["case"], r["impl"]): r for r in data["rows"]}
    for impl in ("reference", "sdpa", "structured"):  # backends of every device pass parity and get timed
        row = rows[("attention", impl)]
        assert row["parity"] == "ok" and row["fwd"]["median"] > 0 and row["fwd_bwd"]["median"] > 0
    cuda = rows[("attention", "cuda")]
    if torch.cuda.is_available():  # the extension builds here (a CUDA machine has the toolkit) and is timed
        assert cuda["parity"] == "ok" and cuda["fwd_bwd"]["median"] > 0
    else:
        assert cuda["parity"].startswith("skipped")
    for suffix in (".csv", ".md", ".png"):
        assert result.with_suffix(suffix).exists()
