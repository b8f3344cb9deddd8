#!/usr/bin/env bash
# Issue 25: a human-label budget spent where the reward model cannot judge. Side by side at equal
# budgets B (2% and 5% of the initial pool), MiniLM on HH-RLHF harmless and summarize-from-feedback,
# 5 seeds, everything else as Table 1 at CPU scale (experiment=ser_*_minilm: 15% seed, 3 loops):
#   - SER alone (acquisition=none); its loop 0 is the 15% seed RM, compare_full the full-data RM;
#   - SER + B labels chosen by acquisition=random (the control), uncertain, disagree: per_loop = B/2
#     of the initial pool each loop until B of the initial pool is spent (loops 0 and 1 ask, so every
#     rule spends B unless the pool runs dry; `ser report` plots the labels actually used);
#   - supervised only: the seed plus B random labels (acquisition.self_label=false, all B asked at
#     loop 0, one more loop trained on seed + B, no pseudo-labels).
# Loop 0 and the full-data RM do not depend on acquisition: phase reuse computes them once per seed.
# `ser report OUT` writes the table (human labels used, test accuracy with 95% CIs) and
# accuracy_vs_human_labels.png. Usage (repo root, after `make install`):
#   bash experiments/acquisition.sh [EXPERIMENTS] [SEEDS]      (BUDGETS=0.02,0.05 OUT=multirun/acquisition)
# Seeds are the outer loop, so a sweep stopped early holds complete seeds (every method, every budget).
# Two datasets side by side on 2 cores (one thread each):
#   OMP_NUM_THREADS=1 bash experiments/acquisition.sh ser_hh_minilm &
#   OMP_NUM_THREADS=1 bash experiments/acquisition.sh ser_summarize_minilm &
# Every run resumes: the same command continues an interrupted sweep and skips finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
EXPERIMENTS=${1:-ser_hh_minilm,ser_summarize_minilm}
SEEDS=${2:-0,1,2,3,4}
BUDGETS=${BUDGETS:-0.02,0.05}
OUT=${OUT:-multirun/acquisition}
export SER_DATA_DIR=${SER_DATA_DIR:-$(cd .. && pwd)/shared/data}
PY=${PY:-.venv/bin/python}
train() { "$PY" -m ser.train -m "experiment=$EXPERIMENTS" "seed=$SEED" trainer.enable_progress_bar=false "$@"; }

for SEED in ${SEEDS//,/ }; do
  train acquisition=none "hydra.sweep.dir=$OUT/ser_alone"
  for B in ${BUDGETS//,/ }; do
    HALF=$("$PY" -c "print($B / 2)")
    train "acquisition=random,uncertain,disagree" "acquisition.budget=$B" "acquisition.per_loop=$HALF" \
      "hydra.sweep.dir=$OUT/ser_acquisition"
    train acquisition=random acquisition.self_label=false "acquisition.budget=$B" "acquisition.per_loop=$B" \
      loop.max_loops=1 "hydra.sweep.dir=$OUT/supervised"
  done
done
"$PY" -m ser.cli report "$OUT"
