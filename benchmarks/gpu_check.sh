#!/usr/bin/env bash
# The one device call (about 8 minutes on an H100/H200): kernel correctness, then every timing.
#   run(command="bash benchmarks/gpu_check.sh", timeout_s=600)
# Writes $OUT/gpu_check.json (sections appear as they finish), gpu_check.log and nvidia_smi.csv.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv \
  > "$OUT/nvidia_smi.csv" 2>&1 || true
# the kernels are off by default on CUDA until this run has checked them (fast/kernels/launch.py)
export XCEPTION_CUDA_KERNELS=1
PYTHONPATH=src timeout 540 python benchmarks/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
