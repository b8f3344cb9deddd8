#!/usr/bin/env bash
# Issue 22: SER in the paper's data regime. The paper's "15% labelled" is 15% of a full training set
# (~24,000 HH pairs); ours was 15% of 1,613 pairs. Here the training set grows, labelled_fraction
# stays 0.15: AlpacaEval's 40,000 GPT-4-judged pairs (experiment=ser_alpaca_eval_minilm, max length
# 512: most answers whole), data.limit = N, seeds as given. Sizes are the outer loop, smallest
# first, so a sweep stopped early holds complete small sizes.
#   bash experiments/data_regime.sh [SIZES] [SEEDS] [EXPERIMENT]
#   (default 1600,5000,10000,20000,40000 / 0,1,2 / ser_alpaca_eval_minilm; OUT=multirun/data_regime)
# Two runs side by side on 2 cores (one thread each): split the seeds,
#   OMP_NUM_THREADS=1 bash experiments/data_regime.sh 1600,5000 0,1 &
#   OMP_NUM_THREADS=1 bash experiments/data_regime.sh 1600,5000 2 &
# then `ser report multirun/data_regime` (table "Data regime" and data_regime.png). Every run
# resumes: the same command continues an interrupted sweep and skips finished runs.
# Cost (MiniLM, one thread): grows with N, pool scoring every loop and the full-data RM dominate;
# N=10,000 took 28 min at 128 tokens on a 2-core Xeon (AMX); at 512 tokens expect ~2.5x, and more at 20,000+.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${1:-1600,5000,10000,20000,40000}
SEEDS=${2:-0,1,2}
EXPERIMENT=${3:-ser_alpaca_eval_minilm}
OUT=${OUT:-multirun/data_regime}
export SER_DATA_DIR=${SER_DATA_DIR:-$(cd .. && pwd)/shared/data}
PY=${PY:-.venv/bin/python}
for N in ${SIZES//,/ }; do
  "$PY" -m ser.train -m "experiment=$EXPERIMENT" "data.limit=$N" "seed=$SEEDS" trainer.enable_progress_bar=false \
    "hydra.sweep.dir=$OUT"
done
"$PY" -m ser.cli report "$OUT"
