#!/usr/bin/env bash
# The paper's Fig. 4 at CPU scale: PPO of SmolLM2-135M-Instruct driven by the 15%-seed, the SER and
# the full-data MiniLM reward models (HH-RLHF harmless), each trained policy judged against the
# starting policy by the full-data reward model on held-out (test) prompts; best-of-4 sampling with
# each reward model as the cheaper downstream use, judged the same way.
# Usage (repo root, after `make install`):  bash experiments/ppo_compare.sh [SEED] [PPO_STEPS]
#   RM_RUN=DIR   reuse the SER and full-data reward models of a finished main-job run (DIR/ser and
#                DIR/full, e.g. outputs/ser_hh_minilm/experiment=ser_hh_minilm,seed=0) instead of
#                training them again; the 15% seed model is always trained (max_loops=0).
#   PPO_ARGS="..." extra Hydra overrides for the three PPO runs (e.g. fewer PPO epochs on a CPU).
#   RM_ARGS="..."  extra Hydra overrides for the reward-model runs (e.g. trainer.precision=32-true to
#                match an RM_RUN trained in fp32).
# Cost on 2 CPU cores: two reward-model runs (SER + full, then seed) and three PPO runs of
# PPO_STEPS rollout batches (~40-60 s each with SmolLM2, see docs/ppo/README.md), plus evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:-0}
STEPS=${2:-20}
LIMIT=${LIMIT:-64}        # held-out prompts judged per policy
OUT=${OUT:-outputs/ppo_compare/seed_$SEED}   # no "=" or "," in it: Hydra would parse them
PY=${PY:-.venv/bin/python}
export SER_DATA_DIR=${SER_DATA_DIR:-$(cd .. && pwd)/shared/data}
export WANDB_MODE=${WANDB_MODE:-offline} TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
t0=$(date +%s)

# 1. reward models: SER + full-data baseline in one run, the 15% seed model alone (no loop)
if [[ -n "${RM_RUN:-}" ]]; then
  [[ -d "$RM_RUN/ser/reward_model" && -d "$RM_RUN/full/reward_model" ]] || {
    echo "ppo_compare: RM_RUN=$RM_RUN has no ser/reward_model and full/reward_model; run the main job first" >&2; exit 2; }
  mkdir -p "$OUT/rm_ser"; ln -sfn "$(realpath "$RM_RUN/ser")" "$OUT/rm_ser/ser"; ln -sfn "$(realpath "$RM_RUN/full")" "$OUT/rm_ser/full"
  cp "$RM_RUN/results.json" "$OUT/rm_ser/results.json"
else
  $PY -m ser.train experiment=ser_hh_minilm seed=$SEED trainer.enable_progress_bar=false "hydra.run.dir=$OUT/rm_ser" ${RM_ARGS:-}
fi
$PY -m ser.train experiment=ser_hh_minilm seed=$SEED loop.max_loops=0 compare_full=false \
  trainer.enable_progress_bar=false "hydra.run.dir=$OUT/rm_seed" ${RM_ARGS:-}
declare -A RM=([seed]=$OUT/rm_seed/seed/reward_model [ser]=$OUT/rm_ser/ser/reward_model [full]=$OUT/rm_ser/full/reward_model)
JUDGE=${RM[full]}
t1=$(date +%s)

# 2. PPO with each reward model (same data split and seed: trains on labeled + pool prompts only)
for name in seed ser full; do
  $PY -m ser.ppo experiment=ppo_hh_smollm2 seed=$SEED ppo.steps=$STEPS "ppo.reward_model='${RM[$name]}'" \
    trainer.enable_progress_bar=false "hydra.run.dir=$OUT/ppo_$name" ${PPO_ARGS:-}
done
t2=$(date +%s)

# 3. downstream: win rate against the starting policy under the full-data judge; best-of-4
for name in seed ser full; do
  $PY -m ser.cli evaluate-policy --run "$OUT/ppo_$name" --judge "$JUDGE" --limit $LIMIT --seed $SEED \
    --out "$OUT/eval_$name.json" > /dev/null
  $PY -m ser.cli best-of-n --run "$OUT/ppo_$name" --policy smollm2 --reward-model "${RM[$name]}" --judge "$JUDGE" \
    --n 4 --limit $LIMIT --seed $SEED --out "$OUT/bon_$name.json" > /dev/null
done
t3=$(date +%s)

# 4. the table
$PY - "$OUT" $((t1 - t0)) $((t2 - t1)) $((t3 - t2)) <<'PYEOF' | tee "$OUT/results.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| reward model | RM test acc | PPO reward first->last quarter | win / tie / loss vs start (full-data judge) "
      "| judge reward policy / start | KL to start | best-of-4 win / tie / loss | s per PPO step |")
print("|---|---|---|---|---|---|---|---|")
for name, run, phase in (("15% seed", "rm_seed", "seed"), ("SER", "rm_ser", "ser"), ("full data", "rm_ser", "full")):
    key = {"15% seed": "seed", "SER": "ser", "full data": "full"}[name]
    acc = json.loads((out / run / "results.json").read_text())["phases"][phase]["test_acc"]
    p = json.loads((out / f"ppo_{key}" / "ppo" / "ppo.json").read_text())
    e = json.loads((out / f"eval_{key}.json").read_text())
    b = json.loads((out / f"bon_{key}.json").read_text())
    print(f"| {name} | {acc:.3f} | {p['reward_first_quarter']:.3f} -> {p['reward_last_quarter']:.3f} "
          f"| {e['win_rate']:.2f} / {e['tie_rate']:.2f} / {e['loss_rate']:.2f} "
          f"| {e['judge_reward_policy']:.3f} / {e['judge_reward_base']:.3f} | {e['kl_to_reference']:.2f} "
          f"| {b['win_rate']:.2f} / {b['tie_rate']:.2f} / {b['loss_rate']:.2f} | {p['time_per_step_s']} |")
print(f"\nwall time: reward models {sys.argv[2]} s, PPO {sys.argv[3]} s, evaluation {sys.argv[4]} s "
      f"(n = {e['n']} held-out prompts per policy)")
# the three training-reward curves side by side (each under its own reward model, so compare shapes)
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
for name, key in (("15% seed", "seed"), ("SER", "ser"), ("full data", "full")):
    rows = [json.loads(x) for x in (out / f"ppo_{key}" / "ppo" / "ppo_metrics.jsonl").read_text().splitlines() if x.strip()]
    r = [x["reward"] for x in rows]
    sd = (sum((v - sum(r) / len(r)) ** 2 for v in r) / max(1, len(r) - 1)) ** 0.5 or 1.0
    ax[0].plot([x["step"] for x in rows], [(v - r[0]) / sd for v in r], "o-", alpha=0.7, label=name)
    ax[1].plot([x["step"] for x in rows], [x["kl"] for x in rows], "o-", alpha=0.7, label=name)
ax[0].set_xlabel("PPO step"); ax[0].set_ylabel("training RM reward - step 1 (in run std)")
ax[1].set_xlabel("PPO step"); ax[1].set_ylabel("KL to reference (per sequence)")
ax[0].legend(); fig.tight_layout(); fig.savefig(out / "reward_curves.png", dpi=120)
print(f"plot: {out / 'reward_curves.png'}")
PYEOF
