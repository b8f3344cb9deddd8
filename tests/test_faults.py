"""Fault injection: a tiny SER run killed (SIGKILL, ``ser.faults``) inside training, scoring, a
checkpoint write, self-labelling, publishing to the reuse cache and the export, resumed each time
with the same command, ends exactly as an uninterrupted run: same selections, same per-loop
results, bit-identical exported weights."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT
from tests.loop_utils import selections
from tests.synthetic import tiny_overrides, write_pairs


# (point, n-th visit since the restart), in the order the run meets them. The loop-0 entry is
# published only by a run that starts without progress of its own, so that kill comes first.
KILLS = [("publish", 1), ("train_step", 5), ("pool_scored", 1), ("score_batch", 2), ("checkpoint", 2),
         ("export", 1)]


def _run(over, out, fault=None, cache=None):
    env = dict(os.environ, PYTHONUNBUFFERED="1", SER_REUSE_DIR=str(cache))
    env.pop("SER_FAULT", None)
    if fault:
        env["SER_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "ser.train", *over, f"hydra.run.dir={out}"], cwd=ROOT, env=env,
                          capture_output=True, text=True)


def _loop_key(h):
    return (h.get("status"), h.get("kept"), h["test_acc"], h.get("val_acc"), h["train_pairs"], h["stop"])


@pytest.mark.slow
def test_killed_at_every_point_resumes_to_the_uninterrupted_run(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", n=240)
    over = tiny_overrides(data, "loop.max_loops=2", "loop.epochs_per_loop=3", "reuse.enabled=true")
    ref = _run(over, tmp_path / "ref", cache=tmp_path / "cache_ref")
    assert ref.returncode == 0, ref.stderr[-2000:]

    out, cache = tmp_path / "killed", tmp_path / "cache"
    for point, n in KILLS:
        r = _run(over, out, f"{point}:{n}", cache)
        assert r.returncode == -signal.SIGKILL, f"{point}:{n} was not reached (rc {r.returncode}): {r.stderr[-1500:]}"
        assert not (out / "results.json").exists()
    done = _run(over, out, cache=cache)
    assert done.returncode == 0, done.stderr[-2000:]

    assert selections(out) == selections(tmp_path / "ref")
    loops = lambda d: json.loads((d / "results.json").read_text())["phases"]["ser"]["loops"]  # noqa: E731
    assert [_loop_key(h) for h in loops(out)] == [_loop_key(h) for h in loops(tmp_path / "ref")]
    from safetensors.torch import load_file

    w_ref, w_out = (load_file(d / "ser" / "reward_model" / "model.safetensors") for d in (tmp_path / "ref", out))
    assert w_ref.keys() == w_out.keys() and all(torch.equal(w_ref[k], w_out[k]) for k in w_ref)
    # the entry killed while being published left only its temporary folder: nothing that a later run
    # could take for a complete entry
    assert not [p for p in (cache / "loop0").iterdir() if p.is_dir() and not p.name.startswith(".")]
