#!/usr/bin/env bash
# One-shot check of the CUDA flash-attention kernels on a GPU machine (an H200,
# sm_90), run from the repository root:
#
#   tools/gpu-check.sh [STEP ...]     steps: build test sanitize bench (default: all four)
#
#   build     pip install --no-build-isolation -e . with FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0
#   test      pytest -m cuda tests/test_flash_attn_cuda.py
#   sanitize  compute-sanitizer memcheck and racecheck on a tiny forward/backward/kvcache script
#   bench     kernelzoo bench flash_attn_kvcache / flash_attn_forward --device cuda
#
# Each step's output goes to $OUT/<step>.log (OUT defaults to /tmp/gpu-check-out) and
# a line per step (exit status, seconds) to $OUT/summary.txt. Every step runs under
# `timeout`, capped by the time left of GPU_CHECK_BUDGET seconds (default 690) from
# the start, and a failing step never stops the later ones. One command on the
# device tool may run 600 s at most: give a single call GPU_CHECK_BUDGET=560, or
# run `build` in one call and `test sanitize bench` in the next (the machine keeps
# the build while it stays warm).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-690}
STEPS=${*:-build test sanitize bench}

# step NAME CAP_SECONDS COMMAND...: run COMMAND with output to $OUT/NAME.log (appended).
step() {
  local name=$1 cap=$2 left t0 rc
  shift 2
  left=$((BUDGET - ($(date +%s) - START)))
  ((cap > left)) && cap=$left
  if ((cap < 15)); then
    echo "$name: skipped (budget of ${BUDGET}s spent)" | tee -a "$OUT/summary.txt"
    return
  fi
  echo "== $name (timeout ${cap}s): $*" | tee -a "$OUT/$name.log"
  t0=$(date +%s)
  timeout --kill-after=10 "$cap" "$@" >>"$OUT/$name.log" 2>&1
  rc=$?
  ((rc == 124 || rc == 137)) && rc="$rc (timed out)"
  echo "$name: exit $rc after $(($(date +%s) - t0))s: $*" | tee -a "$OUT/summary.txt"
}

{
  echo "gpu-check $(date -u +%FT%TZ), steps: $STEPS, budget ${BUDGET}s"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  $PY -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__,
"cuda", torch.version.cuda, "gpu", torch.cuda.is_available())' 2>&1
  nvcc --version 2>&1 | tail -1
} | tee -a "$OUT/summary.txt"

for s in $STEPS; do
  case $s in
  build)
    step build 480 env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 \
      $PY -m pip install --no-build-isolation --no-deps -v -e .
    step build 30 $PY -m kernelzoo info
    ;;
  test)
    per_test=""  # pytest-timeout, where installed: a hung test fails instead of eating the budget
    $PY -c 'import pytest_timeout' 2>/dev/null && per_test=--timeout=300
    step test 240 $PY -m pytest -m cuda tests/test_flash_attn_cuda.py -q -x -p no:cacheprovider \
      --durations=15 $per_test
    ;;
  sanitize)
    script=$(mktemp --suffix=.py)
    cat >"$script" <<'EOF'
import torch
from kernelzoo import ops

torch.manual_seed(0)
dev, f16 = "cuda", torch.float16
q, k, v = (torch.randn(2, 65, 4, 64, device=dev, dtype=f16, requires_grad=True) for _ in range(3))
out = ops.flash_attn_func(q, k, v, causal=True)
out.backward(torch.randn_like(out))                        # dq with atomics
torch.use_deterministic_algorithms(True)
ops.flash_attn_func(q, k, v, causal=True).backward(torch.randn_like(out))  # split per key block
torch.use_deterministic_algorithms(False)
q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
ops.flash_attn_func(q32, k32, v32, causal=True).sum().backward()          # float32 kernels
kc, vc = (torch.randn(2, 4096, 2, 64, device=dev, dtype=f16) for _ in range(2))
qd, kn, vn = (torch.randn(2, 1, h, 64, device=dev, dtype=f16) for h in (8, 2, 2))
lens = torch.tensor([17, 3000], dtype=torch.int32, device=dev)
ops.flash_attn_with_kvcache(qd, kc, vc, kn, vn, cache_seqlens=lens, causal=True)  # split-KV
torch.cuda.synchronize()
print("sanitizer script: done")
EOF
    sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
    # no caching allocator: every tensor its own allocation, so an access past one is caught
    step memcheck 90 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
      "$sanitizer" --tool memcheck --error-exitcode 9 --print-limit 50 $PY "$script"
    step racecheck 120 "$sanitizer" --tool racecheck --error-exitcode 9 --print-limit 50 $PY "$script"
    rm -f "$script"
    ;;
  bench)
    # two runs, so that a timeout in the long one keeps the short one's table
    step bench 60 $PY -m kernelzoo bench flash_attn_kvcache --device cuda --repeats 5 --warmup 1
    step bench 240 $PY -m kernelzoo bench flash_attn_forward --device cuda --repeats 5 --warmup 1
    ;;
  *) echo "unknown step $s (steps: build test sanitize bench)" | tee -a "$OUT/summary.txt" ;;
  esac
done
echo "gpu-check: done after $(($(date +%s) - START))s" | tee -a "$OUT/summary.txt"
