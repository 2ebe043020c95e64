#!/usr/bin/env bash
# Every committed experiment of docs/results/, with the default budget (Fashion-MNIST, 5 seeds).
# Two chains side by side, one CPU thread per run: on a 2-core machine that trains ~2x the
# images per second of one run with two threads. Resumable: each finished run is kept in
# NAME/runs.jsonl, so rerunning this script continues where it stopped (SIGTERM/Ctrl-C stop
# at a run boundary; a run cut short is redone).
#   nohup bash docs/results/run_all.sh > experiments.log 2>&1 &
set -uo pipefail
cd "$(dirname "$0")/../.."
run() { python -m xception experiment "$@" --set train.threads=1; }
# Order matters for sharing: a run another experiment already trained with the same network,
# budget and seed is copied (residual's "residual" serves activation, order, compression and
# spectrum; activation's "ReLU" serves order's "depthwise-first + ReLU"), so order comes after
# activation. The two chains hold about the same number of runs to train (~50 each).
(run residual --out docs/results/residual
 run activation --out docs/results/activation
 run compression --out docs/results/compression
 run compression --match-params --out docs/results/compression-matched) > docs/results/chain1.log 2>&1 &
(run spectrum --match-params --out docs/results/spectrum-matched
 run spectrum --out docs/results/spectrum
 run order --out docs/results/order) > docs/results/chain2.log 2>&1 &
wait
# The headline (about 10 h of two processes; they share one folder, see docs/experiments.md):
#   for i in 1 2; do python -m xception experiment versus --set train.threads=1 \
#     --out docs/results/versus & done; wait
