#!/usr/bin/env bash
# The prepared GPU check, for a session lent a GPU (the device tool), in two calls of 6-7 minutes that
# follow one another on the same warm machine (the built extension and Triton's cache carry over):
#   run(command="bash benchmarks/gpu_check.sh core", timeout_s=420)
#   run(command="bash benchmarks/gpu_check.sh more", timeout_s=360)   # at once: the machine stays warm 30 s
# (every step at its limit: 410 + 340 s, with the machine's start about 13.5 of the 15 minutes a session has)
# core: install (no downloads), the CUDA extension for this GPU's architecture, the GPU tests (Triton and CUDA
#       parity, custom ops, compiled training blocks, no host syncs), the attention benchmarks at the goal
#       shapes, patch embedding and block, and the Triton tuning sweep.
# more: the training step (eager, compiled, triton, reference attention), the other test files whose code
#       behaves differently with a GPU, `ecg-jepa pretrain` end to end and compute-sanitizer over the fused
#       backends. (The data, run-folder and kernel-report tests are CPU code: CI runs them.)
# Measured on an H100 (2026-11-26): core's steps took 30 + 150 + 94 + 51 s, more's 120 + 120 + 20 + 13 s.
# Every step has its own time limit, so a phase always ends and returns what it measured; benchmark rows and
# test outcomes are printed as they come. Files in $OUT (at most 8): log.txt and the steps' outputs.
# Commit what it measured under benchmarks/results/ with the device, versions and commit.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-check}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
step() { echo; echo "== [$(date +%T)] $*"; }
# Verbose: every test's outcome is a line with its name as it finishes, so a run cut short by its time limit
# still names its failures; the slowest tests are listed when it ends in time.
PYTEST="-p no:cacheprovider -p no:benchmark -v -rfE --durations=15"
failures() {  # the failed tests' lines and pytest's last lines
  grep -E "(FAILED|ERROR) tests/" "$1" | sed 's/^\[gw[0-9]*\] //' | sort -u | head -30
  grep -E "passed|failed" "$1" | tail -3
}

setup() {
  step "machine"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,compute_cap --format=csv
  python3 -c "import sys, torch, triton; print(sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__)"
  nvcc --version | tail -2
  step "install (no dependencies fetched)"
  python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v "WARNING: Running pip as" || true
  step "CUDA extension for this GPU"
  TORCH_CUDA_ARCH_LIST=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1) \
    timeout 120 python3 -m ecg_jepa.build_ext
}

bench() {  # bench NAME TIMEOUT ARGS...: the suite with ARGS; its Markdown and JSON copied to $OUT/NAME.{md,json}
  local name=$1 limit=$2
  shift 2
  rm -rf "runs/gpu-$name"
  timeout "$limit" python3 -m ecg_jepa bench --out "runs/gpu-$name" "$@"
  echo "bench $name exit $?"
  local latest
  latest=$(ls -t "runs/gpu-$name"/bench-*.md 2>/dev/null | head -1)
  [ -n "$latest" ] && cp "$latest" "$OUT/$name.md" && cp "${latest%.md}.json" "$OUT/$name.json"
}

core() {
  setup
  step "GPU tests: kernels' parity, custom ops, compiled blocks, no host syncs (emulation tests are CI's)"
  timeout 180 python3 -m pytest $PYTEST -n 12 tests/test_cropa.py tests/test_patch_embed.py \
    tests/test_model.py tests/test_train.py -k "not emulated and not mirror" > "$OUT/pytest-gpu.txt" 2>&1
  echo "pytest exit $?"; failures "$OUT/pytest-gpu.txt"
  step "benchmarks: attention at the goal shapes, patch embedding, encoder block"
  bench kernels 120 --shapes goal --backends reference,sdpa,flex,triton,cuda,dense \
    --only attention,patch-embed,block --budget 0.25
  step "Triton configuration sweep (the paper's shape first; rows saved as they come)"
  timeout 80 python3 -m ecg_jepa.benchmarks.tune_cropa --budget 0.1 --json "$OUT/tune.json"
}

more() {
  setup
  step "benchmark: the training step (vit-b, B=64, bf16; auto eager and compiled, triton, reference)"
  bench train-step 150 --only train-step --budget 0.5
  step "the other tests whose code sees the GPU (benchmark suite, extension, CLI, README, downstream)"
  timeout 100 python3 -m pytest $PYTEST -n 12 -m "not slow" tests/test_bench.py tests/test_build_ext.py \
    tests/test_cli.py tests/test_readme.py tests/test_downstream.py > "$OUT/pytest-rest.txt" 2>&1
  echo "pytest exit $?"; failures "$OUT/pytest-rest.txt"
  step "pretrain: vit-b, 20 steps, as the CLI decides"
  rm -rf runs/gpu-pretrain
  timeout 40 python3 -m ecg_jepa pretrain --preset vit-b --steps 20 --train-size 2048 --probe-train 0 --workers 4 \
    --out runs/gpu-pretrain > "$OUT/pretrain.txt" 2>&1
  echo "pretrain exit $?"; tail -8 "$OUT/pretrain.txt"
  step "compute-sanitizer (memcheck) over the fused backends"
  timeout 40 compute-sanitizer --tool memcheck --error-exitcode 3 python3 -m ecg_jepa.benchmarks.fused_once \
    > "$OUT/sanitizer.txt" 2>&1
  echo "compute-sanitizer exit $?"; tail -5 "$OUT/sanitizer.txt"
}

case "${1:-all}" in
  core) core ;;
  more) more ;;
  all) core; more ;;
  *) echo "usage: $0 [core|more|all]"; exit 2 ;;
esac
step "done"
