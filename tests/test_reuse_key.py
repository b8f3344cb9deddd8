"""Phase reuse (ser/reuse.py): what the key covers, entries checked before use, ``ser cache``.

Each test is a way a stale entry could be reused: two data files with the same base name, a
library upgrade, changed weights in a local folder, other numerics; or a damaged entry loaded.
"""
from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import time

import pytest
import torch

from ser.cli import main
from ser.reuse import PhaseCache, key_parts, phase_key
from ser.train import run
from tests.conftest import compose
from tests.synthetic import tiny_overrides, write_pairs


def _key(data, *overrides: str) -> str:
    return phase_key(compose(tiny_overrides(data, "loop.max_loops=2", *overrides)), "loop0")


def _edit(path) -> None:
    path.write_text(path.read_text().replace("cats", "dogs"))  # same name, new content


# -- data files ------------------------------------------------------------------------------------

def test_two_data_files_with_the_same_base_name(tmp_path):
    """``harmless-base/train.jsonl`` and ``helpful-base/train.jsonl``: an edit to either changes the key."""
    a = write_pairs((tmp_path / "harmless-base").mkdir() or tmp_path / "harmless-base" / "train.jsonl", n=40)
    b = write_pairs((tmp_path / "helpful-base").mkdir() or tmp_path / "helpful-base" / "train.jsonl", n=40, seed=1)
    over = [f"data.data_dir={tmp_path}", "data.files=[harmless-base/train.jsonl,helpful-base/train.jsonl]"]
    k0 = _key(a, *over)
    parts = key_parts(compose(tiny_overrides(a, *over)), "loop0")
    assert set(parts["data_files"]["files"]) == {"harmless-base/train.jsonl", "helpful-base/train.jsonl"}
    _edit(a)
    k1 = _key(a, *over)
    _edit(b)
    assert len({k0, k1, _key(a, *over)}) == 3


def test_data_root_moved_keeps_the_key(tmp_path):
    """Paths are taken under the data root: the same files elsewhere share the entry."""
    for root in ("one", "two"):
        write_pairs((tmp_path / root / "hh").mkdir(parents=True) or tmp_path / root / "hh" / "train.jsonl", n=40)
    keys = {_key(tmp_path, f"data.data_dir={tmp_path / root}", "data.files=[hh/train.jsonl]") for root in ("one", "two")}
    assert len(keys) == 1


def test_a_test_file_and_an_eval_set_file_both_called_test(tmp_path):
    (tmp_path / "hh").mkdir()
    (tmp_path / "other").mkdir()
    train = write_pairs(tmp_path / "hh" / "train.jsonl", n=60)
    test = write_pairs(tmp_path / "hh" / "test.jsonl", n=30, seed=1)
    extra = write_pairs(tmp_path / "other" / "test.jsonl", n=30, seed=2)
    over = [f"data.test_files=[{test}]", f"+data.eval_sets.other={{files:[{extra}],format:pairs}}"]
    k0 = _key(train, *over)
    _edit(test)
    k1 = _key(train, *over)
    _edit(extra)
    assert len({k0, k1, _key(train, *over)}) == 3


# -- libraries, weights, numerics ------------------------------------------------------------------

def test_a_library_version_change(tmp_path, monkeypatch):
    data = write_pairs(tmp_path / "pairs.jsonl", n=40)
    k0 = _key(data)
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "99.0" if name == "transformers" else real(name))
    assert _key(data) != k0


def test_model_weights_in_a_local_folder_changed_by_one_byte(tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "my-rm"
    folder.mkdir()
    save_file({"w": torch.arange(64, dtype=torch.float32)}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "README.md").write_text("not read by from_pretrained")
    data = write_pairs(tmp_path / "pairs.jsonl", n=40)
    over = ["model.random_init=false", f"model.name_or_path={folder}"]
    k0 = _key(data, *over)
    weights = key_parts(compose(tiny_overrides(data, *over)), "loop0")["weights"]
    assert set(weights["folder"]) == {"model.safetensors", "config.json"}
    (folder / "README.md").write_text("edited")
    assert _key(data, *over) == k0  # a file the model does not read
    raw = bytearray((folder / "model.safetensors").read_bytes())
    raw[-1] ^= 1
    (folder / "model.safetensors").write_bytes(bytes(raw))
    assert _key(data, *over) != k0


def test_thread_count_and_cpu_isa(tmp_path, monkeypatch):
    data = write_pairs(tmp_path / "pairs.jsonl", n=40)
    fp32 = "trainer.precision=32-true"
    k0 = _key(data, fp32)
    with monkeypatch.context() as m:
        m.setattr(torch, "get_num_threads", lambda: 97)
        assert _key(data, fp32) != k0
    with monkeypatch.context() as m:
        m.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "NO AVX")
        assert _key(data, fp32) != k0
    with monkeypatch.context() as m:  # a cap other than the one this run may already have (CI's AVX2 pass)
        m.setenv("ONEDNN_MAX_CPU_ISA", "SSE41" if os.environ.get("ONEDNN_MAX_CPU_ISA") != "SSE41" else "AVX2")
        assert _key(data, fp32) != k0
    assert _key(data, fp32) == k0


def test_precision_auto_shares_with_what_it_resolves_to(tmp_path):
    from ser.precision import resolve_precision

    data = write_pairs(tmp_path / "pairs.jsonl", n=40)
    resolved = resolve_precision("auto", "cpu").precision
    other = "32-true" if resolved != "32-true" else "bf16-mixed"
    assert _key(data, "trainer.precision=auto") == _key(data, f"trainer.precision={resolved}")
    assert _key(data, f"trainer.precision={other}") != _key(data, "trainer.precision=auto")


# -- entries checked before use --------------------------------------------------------------------

def _published(tmp_path) -> tuple[PhaseCache, str]:
    cache = PhaseCache(tmp_path / "cache")
    src = tmp_path / "src"
    (src / "reward_model").mkdir(parents=True)
    (src / "phase.json").write_text(json.dumps({"test_acc": 0.75}))
    (src / "reward_model" / "model.safetensors").write_bytes(os.urandom(4096))
    cache.publish("whole", "k", {"phase.json": src / "phase.json", "reward_model": src / "reward_model"},
                  {"model": "tiny", "data": "pairs", "seed": 0})
    assert cache.ready("whole", "k") is not None
    return cache, "k"


def _truncate(e):
    f = e / "reward_model" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])


def _flip_byte(e):  # same size, other content
    f = e / "reward_model" / "model.safetensors"
    raw = bytearray(f.read_bytes())
    raw[7] ^= 1
    f.write_bytes(bytes(raw))


DAMAGE = {
    "truncated file": _truncate,
    "changed file": _flip_byte,
    "missing file": lambda e: (e / "phase.json").unlink(),
    "half-written (no done)": lambda e: (e / "done").unlink(),
    "old format (no manifest)": lambda e: (e / "manifest.json").unlink(),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_entry_is_removed_not_loaded(tmp_path, caplog, damage):
    cache, key = _published(tmp_path)
    DAMAGE[damage](cache.entry("whole", key))
    with caplog.at_level(logging.WARNING, logger="ser.reuse"):
        assert cache.ready("whole", key) is None
    assert not cache.entry("whole", key).exists()
    lines = [r.getMessage() for r in caplog.records if "invalid" in r.getMessage()]
    assert len(lines) == 1 and str(cache.entry("whole", key)) in lines[0] and "computing it again" in lines[0]


def test_publish_removes_what_a_killed_publish_of_the_same_entry_left(tmp_path):
    cache = PhaseCache(tmp_path / "cache")
    stale = cache.entry("whole", "k").with_name(".k.tmp-999999")  # a run killed while publishing
    stale.mkdir(parents=True)
    (stale / "reward_model.bin").write_bytes(b"0" * 1000)
    (tmp_path / "phase.json").write_text("{}")
    with cache.lock("whole", "k"):
        cache.publish("whole", "k", {"phase.json": tmp_path / "phase.json"}, {})
    assert not stale.exists() and cache.ready("whole", "k") is not None


def test_a_truncated_entry_is_recomputed_by_the_next_run(tmp_path, caplog):
    data = write_pairs(tmp_path / "pairs.jsonl", n=60)
    over = tiny_overrides(data, "loop.max_loops=0", "labeled_fraction=1.0", "loop.epochs_per_loop=1",
                          "reuse.enabled=true", f"reuse.dir={tmp_path / 'cache'}")
    first = run(compose(over, output_dir=tmp_path / "first"))["phases"]["full"]
    entry = next(p for p in (tmp_path / "cache" / "whole").iterdir() if p.is_dir())
    assert json.loads((entry / "meta.json").read_text())["key_parts"]["data_files"]
    weights = entry / "reward_model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="ser.reuse"):
        second = run(compose(over, output_dir=tmp_path / "second"))["phases"]["full"]
    assert "reused" not in second and second["test_acc"] == first["test_acc"]
    assert any("invalid" in r.getMessage() and "truncated" in r.getMessage() for r in caplog.records)
    third = run(compose(over, output_dir=tmp_path / "third"))["phases"]["full"]  # republished, valid
    assert third["reused"] and third["test_acc"] == first["test_acc"]


# -- ser cache list | clear ------------------------------------------------------------------------

def test_ser_cache_list_and_clear(tmp_path, capsys):
    root = tmp_path / "cache"
    cache = PhaseCache(root)
    src = tmp_path / "f.bin"
    src.write_bytes(b"x" * 2000)
    for kind, key, model in (("whole", "old", "minilm"), ("loop0", "k2", "tiny"), ("loop0", "k3", "tiny")):
        cache.publish(kind, key, {"f.bin": src}, {"model": model, "data": "hh_rlhf", "seed": 1})
    days_ago = time.time() - 10 * 86400
    os.utime(cache.entry("whole", "old") / "done", (days_ago, days_ago))
    (cache.entry("loop0", "k3") / "f.bin").write_bytes(b"x")  # truncated

    assert main(["cache", "list", "--dir", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and out[-1].startswith("total: 3 entries") and "(1 invalid)" in out[-1]
    old = next(line for line in out if " old " in line)
    assert old.startswith("whole") and "minilm/hh_rlhf seed 1" in old and old.endswith("valid")
    assert "INVALID" in next(line for line in out if " k3 " in line)

    assert main(["cache", "clear", "--dir", str(root), "--older-than", "5"]) == 0
    out = capsys.readouterr().out
    assert "removed whole old" in out and "(1 entries)" in out and not cache.entry("whole", "old").exists()
    assert main(["cache", "clear", "k2", "k3", "--dir", str(root), "--kind", "whole"]) == 0
    assert "(0 entries)" in capsys.readouterr().out  # k2 and k3 are loop0 entries
    assert main(["cache", "clear", "k2", "--dir", str(root)]) == 0
    assert not cache.entry("loop0", "k2").exists() and cache.entry("loop0", "k3").exists()
    capsys.readouterr()
    with cache.lock("loop0", "k3"):  # a run reading it: kept
        main(["cache", "clear", "--dir", str(root)])
        assert "kept loop0 k3" in capsys.readouterr().out and cache.entry("loop0", "k3").exists()
    main(["cache", "clear", "--dir", str(root)])
    assert "freed" in capsys.readouterr().out and not cache.entry("loop0", "k3").exists()
    main(["cache", "list", "--dir", str(root)])
    assert capsys.readouterr().out.startswith("total: 0 entries")
