#!/usr/bin/env bash
# Fig. 2 (test accuracy per loop over training steps), Fig. 3 (training pairs per loop) and
# Fig. 6 (histogram of |p1 - p2| on the pool per loop) for any finished run or sweep folder:
#   bash experiments/figures.sh outputs/ser_hh_minilm/experiment=ser_hh_minilm
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ser report "${1:?run or sweep folder}" ${2:+--out "$2"}
