#!/usr/bin/env bash
# One prepared GPU check, for a session lent a GPU (the device tool: one call, at most 8 minutes):
#   run(command="PYTHONUNBUFFERED=1 bash benchmarks/gpu_check.sh", timeout_s=540)
# It installs the package (no downloads), builds the CUDA extension, runs the test suite on the GPU (GPU
# tests included), compute-sanitizer over the fused backends, the speed-goal benchmarks (attention at the
# goal shapes, patch embedding, block, training step; parity first, warmed up) and the Triton tuning sweep.
# Every step has its own time limit, so the script always ends and returns what it measured. Writes at
# most 8 files to $OUT: log.txt, pytest.txt, sanitizer.txt, bench.md, bench.json, tune.json, train.txt.
# Commit what it measured under benchmarks/results/ with the device, versions and commit.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-check}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
step() { echo; echo "== [$(date +%T)] $*"; }

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
python3 -c "import sys, torch, triton; print(sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__)"
git log -1 --format='commit %h %s' 2>/dev/null || true

step "install (no dependencies fetched)"
python3 -m pip install -q --no-deps --no-build-isolation -e . || { echo "install failed"; exit 1; }

step "CUDA extension"
timeout 110 python3 -m ecg_jepa.build_ext

step "tests on the GPU"
timeout 110 python3 -m pytest -q -p no:cacheprovider -n 8 -m "not slow" tests/ > "$OUT/pytest.txt" 2>&1
echo "pytest exit $?"; tail -25 "$OUT/pytest.txt"

step "compute-sanitizer (memcheck) over the fused backends"
timeout 40 compute-sanitizer --tool memcheck --error-exitcode 3 python3 -m ecg_jepa.benchmarks.fused_once \
  > "$OUT/sanitizer.txt" 2>&1
echo "compute-sanitizer exit $?"; tail -5 "$OUT/sanitizer.txt"

step "benchmarks: goal shapes, patch embedding, block, training step"
timeout 130 python3 -m ecg_jepa bench --shapes goal --backends reference,sdpa,flex,triton,cuda,dense \
  --only attention,patch-embed,block,train-step --budget 0.25 --out runs/gpu-bench
latest=$(ls -t runs/gpu-bench/bench-*.md 2>/dev/null | head -1)
[ -n "$latest" ] && cp "$latest" "$OUT/bench.md" && cp "${latest%.md}.json" "$OUT/bench.json"

step "Triton configuration sweep"
timeout 50 python3 -m ecg_jepa.benchmarks.tune_cropa --budget 0.1 --json "$OUT/tune.json"

step "pretrain: vit-b, compiled or not as the CLI decides, 30 steps"
timeout 40 python3 -m ecg_jepa pretrain --preset vit-b --steps 20 --train-size 2048 --probe-train 0 --workers 4 \
  --out runs/gpu-pretrain > "$OUT/train.txt" 2>&1
echo "pretrain exit $?"; tail -8 "$OUT/train.txt"

step "done"
