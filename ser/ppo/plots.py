"""Figures of a PPO run: :func:`plot_rewards` draws the reward (and KL) curve per rollout batch
from the stage's ``ppo_metrics.jsonl``.
"""
from __future__ import annotations

import json
from pathlib import Path


def plot_rewards(metrics_jsonl: str | Path, png: str | Path, title: str = "PPO: mean reward per rollout batch") -> Path:
    """Reward (and KL) curve of a PPO run from its ``ppo_metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(x) for x in Path(metrics_jsonl).read_text().splitlines() if x.strip()]
    steps = [r["step"] for r in rows]
    rew = [r["reward"] for r in rows]
    k = max(1, len(rew) // 5)
    smooth = [sum(rew[max(0, i - k + 1): i + 1]) / len(rew[max(0, i - k + 1): i + 1]) for i in range(len(rew))]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(steps, rew, "o-", alpha=0.45, label="batch mean")
    ax[0].plot(steps, smooth, "-", lw=2, label=f"running mean ({k})")
    ax[0].set_xlabel("PPO step (rollout batch)")
    ax[0].set_ylabel("reward (training RM)")
    ax[0].legend()
    ax[0].set_title(title, fontsize=9)
    ax[1].plot(steps, [r["kl"] for r in rows], "o-", color="C3")
    ax[1].set_xlabel("PPO step")
    ax[1].set_ylabel("KL to reference (per sequence)")
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return Path(png)
