#!/usr/bin/env bash
# Table 1 at CPU scale (accuracy of the 15% seed RM, each SER loop, SER final and the full-data RM),
# with MiniLM on HH-RLHF harmless, summarize-from-feedback and UltraFeedback, over 5 seeds.
# Fig. 2 (accuracy per loop over steps), Fig. 3 (pairs per loop) and Fig. 6 (score gaps) are
# drawn by `ser report` from the same runs. Usage (repo root, after `make install`):
#   bash experiments/table1_cpu.sh [EXPERIMENTS] [SEEDS]
# e.g. bash experiments/table1_cpu.sh ser_hh_minilm 0,1,2   (4-8 min per run on 2 cores with native bf16)
# Every run resumes: the same command continues an interrupted sweep and skips finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
EXPERIMENTS=${1:-ser_hh_minilm,ser_summarize_minilm,ser_ultrafeedback_minilm}
SEEDS=${2:-0,1,2,3,4}
OUT=${OUT:-multirun/table1_cpu}
export SER_DATA_DIR=${SER_DATA_DIR:-$(cd .. && pwd)/shared/data}
.venv/bin/python -m ser.train -m "experiment=$EXPERIMENTS" "seed=$SEEDS" \
  trainer.enable_progress_bar=false "hydra.sweep.dir=$OUT"
.venv/bin/ser report "$OUT"
