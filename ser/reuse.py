"""Phase reuse across runs: work that does not depend on the swept values is done once.

Two things are cached, each under a key computed from everything it depends on (:func:`phase_key`:
the resolved config that reaches it, a digest of every data file it reads, and a digest of the
``ser`` source, so edited code never reuses stale work):

- ``whole``: a phase without self-labeling (the full-data baseline, or a seed-only run): its
  results, per-pair evaluation scores and exported reward model. Thresholds and ``loop.max_loops``
  of the run do not reach it.
- ``loop0``: loop 0 of a SER phase, stopped just before the thresholds act: the checkpoint
  (weights, optimizer, schedule, RNG-free loop state), loop 0's evaluation, and the raw scores of
  the pool and of the labeled pairs. A run with the same key labels the cached scores with its own
  thresholds (``ser.loop.label_pool``) and resumes from the checkpoint, which is the path a
  killed-and-resumed run takes, so it ends with exactly the selections and accuracies of a cold run.

Compute-once: the first run to need an entry holds an exclusive lock on it (``fcntl.flock``, freed
by the OS if the process dies) until it has published it; another run wanting the same entry waits,
then reuses it. Entries are written to a temporary folder and renamed into place. ``reuse.enabled
=false`` switches it off; ``reuse.dir`` (default ``$SER_REUSE_DIR``, else ``$SER_CACHE_DIR/phases``, else
``~/.cache/ser/phases``)
holds the entries: a MiniLM loop-0 entry is ~0.3 GB (weights + AdamW state), a full entry ~0.1 GB.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig, OmegaConf

from ser.data import resolve_data_path

log = logging.getLogger("ser.reuse")
PACKAGE = Path(__file__).resolve().parent
#: trainer keys that change what is shown, not what is computed
_DISPLAY_KEYS = {"enable_progress_bar", "enable_model_summary", "log_every_n_steps", "default_root_dir"}


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """Digest of every ``ser/**/*.py`` file: cached work is never reused across code changes."""
    h = hashlib.sha256()
    for f in sorted(PACKAGE.rglob("*.py")):
        h.update(str(f.relative_to(PACKAGE)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def file_digest(path: Path) -> str:
    st = path.stat()
    return _file_digest(str(path), st.st_size, st.st_mtime_ns)


def data_files(dcfg: DictConfig) -> list[Path]:
    """Every local file a data config reads: its files, test files and evaluation sets' files."""
    files = [*(dcfg.get("files") or []), *(dcfg.get("test_files") or [])]
    for spec in (dcfg.get("eval_sets") or {}).values():
        files += [*(spec.get("test_files") or spec.get("files") or [])]
    return [resolve_data_path(f, dcfg.get("data_dir")) for f in files]


def phase_key(cfg: DictConfig, kind: str) -> str:
    """The content key of a ``whole`` phase or a SER phase's ``loop0``."""
    trainer = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if k not in _DISPLAY_KEYS}
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data.pop("data_dir", None)  # where the files are does not matter, their content does
    parts = {
        "kind": kind, "seed": cfg.seed, "labeled_fraction": cfg.labeled_fraction, "export": cfg.export,
        "model": OmegaConf.to_container(cfg.model, resolve=True), "data": data,
        "loss": OmegaConf.to_container(cfg.loss, resolve=True), "optim": OmegaConf.to_container(cfg.optim, resolve=True),
        "trainer": trainer, "float32_matmul_precision": cfg.get("float32_matmul_precision"),
        # what of the loop reaches loop 0 (or a phase without loops); never the thresholds
        "loop": {k: cfg.loop.get(k) for k in ("epochs_per_loop", "score_batch_size", "restart_from_seed", "select")},
        "files": {f.name: file_digest(f) for f in data_files(cfg.data)},
        "source": source_digest(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def default_dir() -> Path:
    """``$SER_REUSE_DIR``, else ``$SER_CACHE_DIR/phases``, else ``~/.cache/ser/phases``."""
    if os.environ.get("SER_REUSE_DIR"):
        return Path(os.environ["SER_REUSE_DIR"])
    return Path(os.environ.get("SER_CACHE_DIR", Path.home() / ".cache" / "ser")) / "phases"


class PhaseCache:
    """Entries ``<dir>/<kind>/<key>/`` (complete when ``done`` exists) and their locks."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(os.path.expanduser(str(root))) if root else default_dir()

    def entry(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def ready(self, kind: str, key: str) -> Path | None:
        e = self.entry(kind, key)
        return e if (e / "done").exists() else None

    @contextlib.contextmanager
    def lock(self, kind: str, key: str) -> Iterator[None]:
        """Exclusive while held; waits for another process computing the same entry."""
        path = self.root / kind / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another run computing %s %s", kind, key)
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def publish(self, kind: str, key: str, files: dict[str, Path], meta: dict) -> Path:
        """Copy ``files`` (name -> file or folder) into the entry, atomically."""
        final = self.entry(kind, key)
        tmp = final.with_name(f".{key}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, src in files.items():
            if Path(src).is_dir():
                shutil.copytree(src, tmp / name)
            else:
                shutil.copy2(src, tmp / name)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        (tmp / "done").write_text("")
        if final.exists():  # a stale partial entry (no "done": ready() never returned it)
            shutil.rmtree(final)
        tmp.rename(final)
        return final


def copy_entry(entry: Path, dest: Path, skip: tuple[str, ...] = ("done", "meta.json")) -> None:
    """Copy an entry's files into a phase folder."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in entry.iterdir():
        if f.name in skip:
            continue
        if f.is_dir():
            shutil.rmtree(dest / f.name, ignore_errors=True)
            shutil.copytree(f, dest / f.name)
        else:
            shutil.copy2(f, dest / f.name)


# --------------------------------------------------------------------------------------------
# Using entries in a phase folder
# --------------------------------------------------------------------------------------------

def _phase_files(phase_dir: Path) -> dict[str, Path]:
    files = {f.name: f for f in phase_dir.glob("eval_scores_loop*.npz")}
    for name in ("phase.json", "loops.jsonl", "reward_model"):
        if (phase_dir / name).exists():
            files[name] = phase_dir / name
    return files


def publish_whole(cache: PhaseCache, key: str, phase_dir: Path) -> None:
    entry = cache.publish("whole", key, _phase_files(phase_dir), {"from": str(phase_dir), "source": source_digest()})
    log.info("published %s phase %s to %s", phase_dir.name, key, entry)


def reuse_whole(entry: Path, phase_dir: Path, key: str) -> dict:
    """Copy a cached phase into ``phase_dir``; its result, with the export path moved here."""
    print(f"[{phase_dir.name}] reusing phase {key} from {entry}", flush=True)
    copy_entry(entry, phase_dir)
    result = json.loads((phase_dir / "phase.json").read_text())
    result["phase"] = phase_dir.name
    if result.get("export"):
        result["export"] = str(phase_dir / "reward_model")
    result["reused"] = {"key": key, "from": str(entry)}
    from ser.checkpoint import write_json

    write_json(phase_dir / "phase.json", result)
    return result


class Loop0Publisher:
    """``SERLoop.on_loop0_scored``: when loop 0 is trained, evaluated and its pool scored (before the
    thresholds act), save the checkpoint, the raw scores and the SER callback's state into the
    cache, then free its lock."""

    def __init__(self, cache: PhaseCache, key: str, phase_dir: Path, release):
        self.cache, self.key, self.phase_dir, self.release = cache, key, phase_dir, release

    def __call__(self, trainer, diag: dict, scores: dict, loop_state: dict) -> None:
        import numpy as np

        tmp = self.phase_dir / "reuse_loop0"
        trainer.save_checkpoint(tmp / "loop0.ckpt")  # every rank (a collective under ddp/fsdp)
        if trainer.is_global_zero:
            np.savez(tmp / "loop0_scores.npz", **{k: v for k, v in scores.items() if v is not None})
            (tmp / "loop0.json").write_text(json.dumps({"diag": diag, "callback": loop_state}, default=float))
            files = {f.name: f for f in tmp.iterdir()}
            for name in ("eval_scores_loop0.npz", "seed_weights.pt", "best_val_weights.pt"):
                if (self.phase_dir / name).exists():
                    files[name] = self.phase_dir / name
            entry = self.cache.publish("loop0", self.key, files, {"from": str(self.phase_dir), "source": source_digest()})
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"[{self.phase_dir.name}] published loop 0 as {self.key} at {entry}", flush=True)
        trainer.strategy.barrier("ser_reuse_publish")
        self.release()


def _state_key(ck: dict, name: str) -> str | None:
    """The key of a callback's or DataModule's state in a Lightning checkpoint (by class name)."""
    return next((k for k in ck if k.endswith(name)), None)


def resume_from_loop0(entry: Path, cfg: DictConfig, phase_dir: Path, key: str) -> None:
    """Write ``phase_dir/checkpoints/last.ckpt`` as this run would have saved it after loop 0:
    the cached weights and optimizer, and the cached scores labeled with this run's thresholds."""
    import numpy as np
    import torch

    from ser.checkpoint import write_json
    from ser.loop import label_pool, thresholds_from_config

    print(f"[{phase_dir.name}] reusing loop 0 ({key}) from {entry}", flush=True)
    ck = torch.load(entry / "loop0.ckpt", map_location="cpu", weights_only=False)
    meta = json.loads((entry / "loop0.json").read_text())
    with np.load(entry / "loop0_scores.npz") as z:
        sc = {k: z[k] for k in z.files}
    th = cfg.thresholds
    val = None
    if (entry / "eval_scores_loop0.npz").exists():
        with np.load(entry / "eval_scores_loop0.npz") as z:
            val = {k: z[k] for k in ("val_chosen", "val_rejected") if k in z.files}
    lab = label_pool(sc["pool"], sc.get("labeled"), sc["alive"], sc["hidden"], thresholds_from_config(th),
                     th.centring, th.get("scaling", "none"), cfg.get("selection"), val)
    diag = dict(meta["diag"], **lab.fields)
    diag["eval_s"] = diag.get("label_s", 0.0)
    diag["stop"] = "stop_status" if lab.stop else None
    diag["reused"] = key
    n_pool = len(sc["hidden"])
    alive = np.ones(n_pool, dtype=bool)
    dm_state = {"selections": [], "include_seed": True, "pool_alive": alive.tolist()}
    if not lab.stop:
        index = [int(i) for i in lab.pool_index]
        dm_state["selections"] = [{"loop": 1, "index": index, "first_is_chosen": [bool(x) for x in lab.first_is_chosen]}]
        if cfg.loop.remove_selected:
            alive[index] = False
            dm_state["pool_alive"] = alive.tolist()
        if not cfg.loop.keep_seed_pairs:
            dm_state["include_seed"] = False
    cb = dict(meta["callback"], loop=1, loop_start_epoch=cfg.loop.epochs_per_loop, history=[diag], finished=lab.stop)
    ck["callbacks"][_state_key(ck["callbacks"], "SERLoop")] = cb
    ck[_state_key(ck, "PreferenceDataModule")] = dm_state
    phase_dir.mkdir(parents=True, exist_ok=True)
    copy_entry(entry, phase_dir, skip=("done", "meta.json", "loop0.ckpt", "loop0.json", "loop0_scores.npz"))
    np.savez_compressed(phase_dir / "pool_scores_loop0.npz", **lab.arrays)
    (phase_dir / "loops.jsonl").write_text(json.dumps(diag) + "\n")
    (phase_dir / "checkpoints").mkdir(exist_ok=True)
    torch.save(ck, phase_dir / "checkpoints" / "last.ckpt.tmp")
    os.replace(phase_dir / "checkpoints" / "last.ckpt.tmp", phase_dir / "checkpoints" / "last.ckpt")
    write_json(phase_dir / "reused.json", {"loop0": key, "from": str(entry)})


def restore_finished(last: Path, module, loop, dm) -> bool:
    """When ``last`` holds a loop that had finished, load its weights and states and say so (the
    fit is then skipped: resuming it would train one more epoch)."""
    import torch

    ck = torch.load(last, map_location="cpu", weights_only=False)
    callbacks = ck.get("callbacks") or {}
    cb = callbacks.get(_state_key(callbacks, "SERLoop"))
    if not cb or not cb.get("finished"):
        return False
    module.load_state_dict(ck["state_dict"])
    loop.load_state_dict(cb)
    dm.load_state_dict(ck[_state_key(ck, "PreferenceDataModule")])
    return True
