"""A small, learnable preference set for tests: helpful 'yes' answers beat curt 'no' ones."""
from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = ["cats", "rivers", "taxes", "bread", "chess", "rain", "music", "trains", "ships", "paint"]


def write_pairs(path: Path, n: int = 120, seed: int = 0, marker_mix: bool = False) -> Path:
    """``n`` explicit pairs; with ``marker_mix`` answers carry easy/hard/flat markers for a fake scorer."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        t = TOPICS[i % len(TOPICS)]
        q = f"question {i}: tell me about {t} please"
        if marker_mix:
            kind = ("easy", "hard", "flat")[i % 3]
            rows.append({"prompt": q, "chosen": f"{kind}plus answer {i}", "rejected": f"{kind}minus answer {i}"})
        else:
            extra = " ".join(rng.choice(TOPICS) for _ in range(rng.randint(1, 6)))
            rows.append({"prompt": q, "chosen": f"yes, gladly: a helpful answer about {t} and {extra}",
                         "rejected": f"no. {extra}"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_overrides(data_file: Path, *extra: str) -> list[str]:
    """A fast tiny-model SER run on ``data_file`` (a few seconds a loop on 2 CPU cores)."""
    return [
        "model=tiny", f"data.files=[{data_file}]", "data.format=pairs", "data.data_dir=null",
        "data.max_length=48", "data.batch_size=8", "labeled_fraction=0.3", "data.val_fraction=0.1",
        "data.test_fraction=0.2", "optim.lr=1e-2", "optim.warmup_steps=0", "loop.epochs_per_loop=2",
        "loop.score_batch_size=32", "thresholds.min_count=2", "logger=csv", "trainer.enable_progress_bar=false",
        "reuse.enabled=false",  # each test computes its own phases (tests/test_reuse.py turns it on)
        *extra,
    ]
