#!/usr/bin/env bash
# Table 1 with the paper's models and settings on HH-RLHF from the hub (needs GPUs and hub access;
# Llama models need an accepted licence and `huggingface-cli login`). One model per call:
#   bash experiments/table1_gpu.sh paper_hh_llama3_8b [SEEDS] [EXTRA OVERRIDES]
# On a SLURM cluster add: hydra/launcher=submitit_slurm (pip install hydra-submitit-launcher).
set -euo pipefail
cd "$(dirname "$0")/.."
EXP=${1:?experiment name, e.g. paper_hh_llama3_8b}
SEEDS=${2:-0,1,2}
shift 2 || shift $#
OUT=${OUT:-multirun/table1_gpu/$EXP}
python -m ser.train -m "experiment=$EXP" "seed=$SEEDS" "hydra.sweep.dir=$OUT" "$@"
ser report "$OUT"
