#!/usr/bin/env bash
# The prepared GPU check, for a session lent a GPU (the device tool), in two calls on one warm machine:
#   run(command="bash benchmarks/gpu_check.sh core", timeout_s=600)   # first: what decides auto and the kernels
#   run(command="bash benchmarks/gpu_check.sh more", timeout_s=600)   # at once: the machine stays warm 30 s
# core (about 8 minutes, every step with its own limit): install (no downloads); the CUDA extension; the
#       CroPA attention benchmark at the four goal shapes (sdpa + mask, dense flash, triton, cuda, split with
#       its Triton row kernels and with the memory-efficient one, and the row pass alone with each of
#       PyTorch's kernels), parity-checked first; auto's table for this card written from it (for the steps after it; commit the result
#       and re-run `python -m ecg_jepa.benchmarks.auto_table` on it here); torch.profiler tables of the vit-b
#       training step as auto now runs it and with split everywhere; the GPU tests of the attention
#       ops and the model, and compiled == eager over changing masks (the condition for --compile by default);
#       the training step with auto, sdpa and split.
# more (about 9 minutes; the extension is already built by core): the CUDA extension for this GPU, every GPU
#       test, the compiled step's profile (into log.txt), patch embedding and encoder block benchmarks, the
#       Triton tuning sweep, the CLI/README tests, `ecg-jepa pretrain` end to end and compute-sanitizer over
#       the fused backends. (The compiled, triton and reference training steps: `ecg-jepa bench --only
#       train-step`, about 2 minutes, when a session has the time.)
# Benchmark rows and test outcomes are printed as they come, so a step cut short by its limit still shows
# what it measured. Files in $OUT (at most 8). Commit what it measured under benchmarks/results/ with the
# device, versions and commit.
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
  step "install (no dependencies fetched)"
  python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v "WARNING: Running pip as" || true
}

build_ext() {
  step "CUDA extension for this GPU"
  nvcc --version | tail -2
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
  build_ext  # the cuda backend (warp-level forward, issue 23) is timed in the first call too
  step "benchmark: CroPA attention at the goal shapes (bf16; fp16 too at the first)"
  bench kernels 130 --shapes goal --backends sdpa,dense,triton,split,cuda,split-library,row-efficient,row-flash,row-cudnn \
    --only attention --budget 0.2
  step "auto's table for this card (from the benchmark just run)"
  [ -f "$OUT/kernels.json" ] && python3 -m ecg_jepa.benchmarks.auto_table "$OUT/kernels.json" \
    --source "(re-run auto_table on the committed result)"
  python3 -m ecg_jepa backends --batch 64 --heads 16 --leads 8 --head-dim 48 --dtype bf16 --grad 2>&1 | head -4
  step "profile: the vit-b training step as auto runs it, and with split everywhere (eager)"
  timeout 60 python3 -m ecg_jepa.benchmarks.profile_step --out runs/gpu-profile-eager.md | head -14
  timeout 60 python3 -m ecg_jepa.benchmarks.profile_step --attn split --out runs/gpu-profile-split.md | head -14
  cat runs/gpu-profile-{eager,split}.md > "$OUT/profiles.md" 2>/dev/null  # one file: $OUT holds 8
  step "GPU tests: split, triton and the dispatcher; the model and the training blocks with each; compiled == eager"
  timeout 150 python3 -m pytest $PYTEST -n 12 tests/test_cropa.py tests/test_model.py tests/test_train.py \
    -k "split or dispatch or committed or backends_match or compiled_blocks or warms or compile_matches_eager" \
    > "$OUT/pytest-gpu.txt" 2>&1
  echo "pytest exit $?"; failures "$OUT/pytest-gpu.txt"
  step "benchmark: the training step (vit-b, B=64, bf16, eager): auto, sdpa, split"
  bench train-step 60 --only train-step --backends sdpa,split --budget 0.3
}

more() {
  setup
  build_ext
  step "every GPU test (emulation tests are CI's)"
  timeout 150 python3 -m pytest $PYTEST -n 12 tests/test_cropa.py tests/test_patch_embed.py \
    tests/test_model.py tests/test_train.py -k "not emulated and not mirror" > "$OUT/pytest-gpu-all.txt" 2>&1
  echo "pytest exit $?"; failures "$OUT/pytest-gpu-all.txt"
  step "profile: the vit-b training step with the block stacks compiled (what --compile would run)"
  timeout 100 python3 -m ecg_jepa.benchmarks.profile_step --compiled --out runs/gpu-profile-compiled.md > /dev/null
  cat runs/gpu-profile-compiled.md 2>/dev/null  # the whole table in log.txt: $OUT holds 8 files
  step "benchmarks: patch embedding, encoder block"
  bench blocks 60 --only patch-embed,block --budget 0.25
  step "Triton configuration sweep (the paper's shape first; rows saved as they come)"
  timeout 60 python3 -m ecg_jepa.benchmarks.tune_cropa --budget 0.1 --json "$OUT/tune.json"
  step "the other tests whose code sees the GPU (benchmark suite, extension, CLI, README, downstream)"
  timeout 60 python3 -m pytest $PYTEST -n 12 -m "not slow" tests/test_bench.py tests/test_build_ext.py \
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
