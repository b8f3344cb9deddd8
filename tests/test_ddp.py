"""Scale-out on CPU: 2 processes (gloo). Scoring is sharded and gathered with identical results."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import OmegaConf

from ser import status as st
from tests.conftest import CONF, ROOT
from tests.synthetic import tiny_overrides, write_pairs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_and_seqs():
    from ser.data import Formatter
    from ser.model import build_hf_model, load_tokenizer

    cfg = OmegaConf.load(CONF / "model" / "tiny.yaml")
    tok = load_tokenizer(cfg)
    net = build_hf_model(cfg, tok).eval()
    fmt = Formatter(tok, max_length=64)
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta"]
    seqs = [fmt.encode([{"role": "user", "content": f"q{i}"}], " ".join(rng.choice(words, rng.integers(1, 30))))[0]
            for i in range(203)]  # odd count: uneven shards
    return tok, net, seqs


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from ser.model import score_sequences

    tok, net, seqs = _tiny_and_seqs()

    def gather(t):
        parts = [torch.zeros_like(t) for _ in range(world)]
        dist.all_gather(parts, t)
        return torch.stack(parts)

    scores = score_sequences(net, seqs, tok.pad_token_id, batch_size=16, rank=rank, world_size=world, gather=gather)
    np.save(f"{out}/rank{rank}.npy", scores)
    # fsdp's path: a forward with a collective inside (as a sharded module's all-gather) must be
    # called as often on every rank, or the ranks hang
    from ser.rewards import sequence_rewards

    calls = []

    def forward(ids, mask):
        dist.all_reduce(torch.ones(1))
        calls.append(len(ids))
        return sequence_rewards(net, ids, mask)

    lockstep = score_sequences(net, seqs, tok.pad_token_id, batch_size=16, rank=rank, world_size=world, gather=gather,
                               forward=forward)
    np.save(f"{out}/lockstep{rank}.npy", lockstep)
    np.save(f"{out}/calls{rank}.npy", np.array(len(calls)))
    dist.destroy_process_group()


def test_sharded_scoring_equals_single_process(tmp_path):
    from ser.model import score_sequences

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    tok, net, seqs = _tiny_and_seqs()
    single = score_sequences(net, seqs, tok.pad_token_id, batch_size=16)
    r0, r1 = np.load(tmp_path / "rank0.npy"), np.load(tmp_path / "rank1.npy")
    assert np.array_equal(r0, r1)  # every rank holds the full gathered array
    assert np.allclose(r0, single, atol=1e-6)
    # 13 batches: 7 on rank 0, 6 + 1 padding forward on rank 1; the padding's scores are dropped
    assert int(np.load(tmp_path / "calls0.npy")) == int(np.load(tmp_path / "calls1.npy")) == 7
    assert np.array_equal(np.load(tmp_path / "lockstep0.npy"), r0) and np.array_equal(np.load(tmp_path / "lockstep1.npy"), r0)
    # the same scores give the same selection
    th = st.Thresholds(min_count=1)
    p = st.probabilities(st.scale_scores(st.centre_scores(single, "pool_mean"), "pool_std", single))
    q = st.probabilities(st.scale_scores(st.centre_scores(r0, "pool_mean"), "pool_std", r0))
    n = len(p) // 2
    a, b = st.select_pairs(p[:n], p[n:2 * n], st.Status.EASY, th), st.select_pairs(q[:n], q[n:2 * n], st.Status.EASY, th)
    assert np.array_equal(a.index, b.index) and np.array_equal(a.first_is_chosen, b.first_is_chosen)


@pytest.mark.slow
def test_ser_run_under_ddp_two_cpu_processes(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", n=160)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "ser.train", *tiny_overrides(data, "loop.max_loops=2", "loop.epochs_per_loop=4"), "trainer=ddp",
           "trainer.accelerator=cpu", "trainer.devices=2", f"hydra.run.dir={out}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PL_DISABLE_FORK="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    hist = res["phases"]["ser"]["loops"]
    assert hist[0]["status"] in ("EASY", "HARD") and hist[0]["kept"] > 0
    assert hist[0]["pool"] == res["phases"]["ser"]["counts"]["pool"]  # the whole pool was scored (gathered)
    npz = np.load(out / "ser" / "pool_scores_loop0.npz")
    assert len(npz["scores_a1"]) == hist[0]["pool"] and np.isfinite(npz["scores_a1"]).all()
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in done.stdout + done.stderr
