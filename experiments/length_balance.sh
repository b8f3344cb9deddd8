#!/usr/bin/env bash
# Table 1 with length control (issue 21): the paper's selection rule beside the length-balanced one
# (selection.length_balance=false,true) over 5 seeds, one sweep folder per dataset. Phase reuse
# trains each seed's loop 0 (the seed RM) and its full-data RM once for both arms.
#   bash experiments/length_balance.sh [EXPERIMENTS] [SEEDS]
# Two datasets side by side on 2 cores (one thread each), e.g.
#   OMP_NUM_THREADS=1 bash experiments/length_balance.sh ser_hh_minilm,ser_ultrafeedback_minilm &
#   OMP_NUM_THREADS=1 bash experiments/length_balance.sh ser_summarize_minilm &
# then: ser report multirun/length_balance --out docs/results/length_balance
# Every run resumes: the same command continues an interrupted sweep and skips finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
EXPERIMENTS=${1:-ser_hh_minilm,ser_summarize_minilm,ser_ultrafeedback_minilm}
SEEDS=${2:-0,1,2,3,4}
OUT=${OUT:-multirun/length_balance}
export SER_DATA_DIR=${SER_DATA_DIR:-$(cd .. && pwd)/shared/data}
PY=${PY:-.venv/bin/python}
for exp in ${EXPERIMENTS//,/ }; do
  "$PY" -m ser.train -m "experiment=$exp" selection.length_balance=false,true "seed=$SEEDS" \
    trainer.enable_progress_bar=false "hydra.sweep.dir=$OUT/$exp"
done
