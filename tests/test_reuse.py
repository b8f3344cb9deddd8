"""Phase reuse (ser/reuse.py): keys, the compute-once lock, and a reused run equal to a cold one."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from ser.reuse import PhaseCache, phase_key
from ser.train import run
from tests.conftest import compose
from tests.loop_utils import selections
from tests.synthetic import tiny_overrides, write_pairs



def test_key_follows_what_reaches_loop0_and_not_the_thresholds(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", n=60)
    key = lambda *o: phase_key(compose(tiny_overrides(data, "loop.max_loops=2", *o)), "loop0")  # noqa: E731
    k = key()
    assert k == key("thresholds.tau_delta=0.2", "thresholds.rule=authors", "loop.max_loops=4")
    assert k == key("trainer.enable_progress_bar=true", "logger=none", "loop.keep_seed_pairs=false")
    assert k != key("optim.lr=5e-3") and k != key("seed=1") and k != key("labeled_fraction=0.4")
    assert k != key("loop.select=best_val") and k != key("data.max_length=40")
    data.write_text(data.read_text().replace("cats", "dogs"))  # same file, new content
    assert key() != k


def test_lock_makes_the_second_run_wait_then_reuse(tmp_path):
    cache = PhaseCache(tmp_path / "cache")
    events = []

    def second():
        with cache.lock("whole", "k"):
            events.append(("second sees", cache.ready("whole", "k") is not None))

    with cache.lock("whole", "k"):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        assert events == []  # blocked while the first computes
        (tmp_path / "result.txt").write_text("42")
        cache.publish("whole", "k", {"result.txt": tmp_path / "result.txt"}, {})
    t.join(5)
    assert events == [("second sees", True)]
    assert (cache.entry("whole", "k") / "result.txt").read_text() == "42"


@pytest.mark.parametrize("select", ["last", "best_val"])
def test_reused_run_equals_a_cold_run(tmp_path, select):
    data = write_pairs(tmp_path / "pairs.jsonl", n=200)
    base = tiny_overrides(data, "loop.max_loops=2", "compare_full=true", "thresholds.scaling=labeled_std",
                          "thresholds.min_count=1", "loop.epochs_per_loop=1", "optim.lr=2e-3", f"loop.select={select}",
                          "reuse.enabled=true", f"reuse.dir={tmp_path / 'cache'}")
    first = run(compose(base, output_dir=tmp_path / "first"))  # publishes loop 0 and the full phase
    other = [*base, "thresholds.tau_high=0.7", "thresholds.tau_low=0.3"]
    reused = run(compose(other, output_dir=tmp_path / "reused"))
    cold = run(compose([*other, "reuse.enabled=false"], output_dir=tmp_path / "cold"))
    r, c = reused["phases"]["ser"], cold["phases"]["ser"]
    assert r["loops"][0]["reused"] and "reused" not in c["loops"][0]
    assert reused["phases"]["full"]["reused"] and "reused" not in cold["phases"]["full"]
    assert r["loops"][0]["kept"] != first["phases"]["ser"]["loops"][0]["kept"]  # its own thresholds labeled
    assert selections(tmp_path / "reused") == selections(tmp_path / "cold")
    keys = ("loop", "status", "kept", "pseudo_label_precision", "train_pairs", "steps", "val_acc", "test_acc", "stop")
    assert [{k: h.get(k) for k in keys} for h in r["loops"]] == [{k: h.get(k) for k in keys} for h in c["loops"]]
    assert r["selected_loop"] == c["selected_loop"] and reused["statistics"] == cold["statistics"]
    assert reused["phases"]["full"]["test_acc"] == cold["phases"]["full"]["test_acc"]
    from safetensors.torch import load_file

    for ph in ("ser", "full"):
        w_r, w_c = (load_file(tmp_path / d / ph / "reward_model" / "model.safetensors") for d in ("reused", "cold"))
        assert all(torch.equal(w_r[k], w_c[k]) for k in w_c), ph
    for f in ("eval_scores_loop0.npz", "eval_scores_loop1.npz", "pool_scores_loop0.npz"):
        a, b = np.load(tmp_path / "reused" / "ser" / f), np.load(tmp_path / "cold" / "ser" / f)
        assert all(np.array_equal(a[k], b[k]) for k in b.files), f


def test_reuse_of_a_loop0_that_stops(tmp_path):
    """Thresholds under which loop 0 labels nothing: the reused run finishes without training more."""
    data = write_pairs(tmp_path / "pairs.jsonl", n=120)
    base = tiny_overrides(data, "loop.max_loops=2", "loop.epochs_per_loop=1", "optim.lr=2e-3",
                          "reuse.enabled=true", f"reuse.dir={tmp_path / 'cache'}")
    run(compose(base, output_dir=tmp_path / "first"))
    strict = [*base, "thresholds.tau_high=0.99", "thresholds.tau_low=0.01", "thresholds.tau_delta=0.99",
              "thresholds.min_count=1000"]
    reused = run(compose(strict, output_dir=tmp_path / "reused"))
    cold = run(compose([*strict, "reuse.enabled=false"], output_dir=tmp_path / "cold"))
    hr, hc = reused["phases"]["ser"]["loops"], cold["phases"]["ser"]["loops"]
    assert len(hr) == len(hc) == 1 and hr[0]["stop"] == hc[0]["stop"] == "stop_status"
    assert hr[0]["test_acc"] == hc[0]["test_acc"] and hr[0]["reused"]
