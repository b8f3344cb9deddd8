#!/usr/bin/env bash
# Table 1 with the decoder reward model SmolLM2-135M (chat template) on the three CPU datasets.
# About 9x slower per step than MiniLM: run it on a larger CPU, or add trainer=gpu on a GPU.
#   bash experiments/table1_smollm2.sh [SEEDS] [EXTRA HYDRA OVERRIDES...]
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:-0}
shift || true
OUT=${OUT:-multirun/table1_smollm2}
export SER_DATA_DIR=${SER_DATA_DIR:-$(cd .. && pwd)/shared/data}
.venv/bin/python -m ser.train -m experiment=ser_hh_smollm2,ser_summarize_smollm2,ser_ultrafeedback_smollm2 \
  "seed=$SEEDS" trainer.enable_progress_bar=false "hydra.sweep.dir=$OUT" "$@"
.venv/bin/ser report "$OUT"
