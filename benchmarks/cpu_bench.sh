#!/usr/bin/env bash
# The CPU figures of benchmarks/RESULTS.md, one `xception benchmark` run per table (~15 min on
# 2 cores; run it on a quiet machine: other jobs on the cores slow every contender 5-10x).
#   bash benchmarks/cpu_bench.sh          # JSON reports into $OUT (default benchmarks/out)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/out}"
mkdir -p "$OUT"
bench() { PYTHONPATH=src python -m xception benchmark --device cpu --threads 2 "$@"; }
common=(--batch 8 --reps 7 --modes infer1,inferN)

# peers as shipped (NCHW, eager); ours_opt is optimize_for_inference's default (channels_last)
bench "${common[@]}" --no-channels-last --out "$OUT/cpu_fp32_eager.json"
# everyone compiled (Inductor with freezing: BN folded, oneDNN prepacked weights)
bench "${common[@]}" --no-channels-last --compile --out "$OUT/cpu_fp32_compiled.json"
# everyone channels_last
bench "${common[@]}" --channels-last --out "$OUT/cpu_fp32_eager_cl.json"
# bfloat16: autocast for the others, bf16 weights for ours_opt (AMX)
bench "${common[@]}" --no-channels-last --dtype bf16 --out "$OUT/cpu_bf16_eager.json"
bench "${common[@]}" --no-channels-last --dtype bf16 --compile --out "$OUT/cpu_bf16_compiled.json"
# training step of the small model: channels_last (+ bf16) against plain NCHW fp32 (ours_ref)
for dtype in fp32 bf16; do
  bench --model xception_small --image-size 32 --num-classes 10 --batch 64 --reps 7 \
    --modes train --contenders ours,ours_ref --dtype "$dtype" --out "$OUT/cpu_small_train_$dtype.json"
done
# training step of the paper model, and its activation memory with checkpointing
bench --batch 8 --reps 5 --modes train --contenders ours,timm,inception,ours_ref \
  --out "$OUT/cpu_fp32_train.json"
bench --batch 2 --reps 1 --warmup 0 --modes train --contenders ours,ours_ref --checkpointing \
  --out "$OUT/cpu_checkpointing_memory.json"
