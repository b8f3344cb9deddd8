"""Kill-and-resume of the SER loop: a run killed in loop 1 and started again ends as the uninterrupted
run, with the same selections, per-loop results and bit-identical weights.

Not marked numerics: it compares two runs on the same kernels, which the AVX2 pass of `make test`
would only repeat (as test_faults and test_acquisition_loop)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import ROOT
from tests.loop_utils import selections
from tests.synthetic import tiny_overrides, write_pairs


@pytest.mark.slow
@pytest.mark.parametrize("selection", [[], ["selection=consistent", "selection.confidence=0.55", "selection.mc_passes=2",
                                            "selection.mc_min_agreement=0.5", "data.val_fraction=0.2"]],
                         ids=["status", "consistent+mc"])
def test_killed_run_resumes_to_the_same_selections(tmp_path, selection):
    data = write_pairs(tmp_path / "pairs.jsonl", n=240)
    over = tiny_overrides(data, "loop.max_loops=3", "loop.epochs_per_loop=6", *selection)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = lambda out: [sys.executable, "-m", "ser.train", *over, f"hydra.run.dir={out}"]  # noqa: E731
    ref = tmp_path / "ref"
    subprocess.run(cmd(ref), check=True, cwd=ROOT, env=env, capture_output=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd(out), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    loops_file = out / "ser" / "loops.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:  # wait until loop 0 is done and loop 1 is under way
        if loops_file.exists() and len(loops_file.read_text().splitlines()) >= 1:
            break
        time.sleep(0.05)
    time.sleep(1.0)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists()
    done = subprocess.run(cmd(out), cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stdout
    assert selections(out) == selections(ref)
    r_ref = json.loads((ref / "results.json").read_text())["phases"]["ser"]["loops"]
    r_out = json.loads((out / "results.json").read_text())["phases"]["ser"]["loops"]
    key = lambda h: (h.get("status"), h.get("kept"), h["test_acc"], h["train_pairs"], h["stop"])  # noqa: E731
    assert [key(h) for h in r_out] == [key(h) for h in r_ref]
    # bit-identical weights: the resumed run trained exactly as the uninterrupted one
    from safetensors.torch import load_file

    w_ref, w_out = (load_file(d / "ser" / "reward_model" / "model.safetensors") for d in (ref, out))
    assert w_ref.keys() == w_out.keys() and all(torch.equal(w_ref[k], w_out[k]) for k in w_ref)
