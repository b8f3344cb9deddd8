"""Phase reuse across runs: work that does not depend on the swept values is done once.

Two things are cached, each under a key computed from everything it depends on:

- ``whole``: a phase without self-labeling (the full-data baseline, or a seed-only run): its
  results, per-pair evaluation scores and exported reward model. Thresholds and ``loop.max_loops``
  of the run do not reach it.
- ``loop0``: loop 0 of a SER phase, stopped just before the thresholds act: the checkpoint
  (weights, optimizer, schedule, RNG-free loop state), loop 0's evaluation, and the raw scores of
  the pool and of the labeled pairs. A run with the same key labels the cached scores with its own
  thresholds (``ser.loop.label_pool``), after asking for its own human labels when it has
  ``acquisition`` (:func:`ser.acquisition.label_and_acquire`, as the live loop), and resumes from
  the checkpoint, which is the path a killed-and-resumed run takes, so it ends with exactly the
  selections and accuracies of a cold run.

The key (:mod:`ser.reuse_key`: :func:`key_parts`, a dict of named parts, hashed by :func:`key_of`) covers: the resolved
config that reaches the phase (model, data, loss, optimiser, trainer, the loop settings of loop 0;
never the thresholds), every local data file by its path relative to the data root (absolute when
outside it) and its content digest, the weights' identity (a local folder: the content digest of its
weight, config and tokenizer files; an offline package copy: package and version; a hub id: the
configured revision, else the id) and the tokenizer's, the hub data sets' ids and revisions, the
versions of python, torch, transformers, lightning, peft, datasets, numpy, tokenizers and
safetensors (the default cache is shared by every virtual env of the user), the numerics (the
precision actually used, torch's thread count, the CPU capability and the ``ONEDNN_MAX_CPU_ISA`` /
``ATEN_CPU_CAPABILITY`` caps, the CUDA device), and a digest of the ``ser`` source, so edited code
never reuses stale work. The parts are written to each entry's ``meta.json``: diff two of them to
see why two runs did or did not share.

Each entry is published with a manifest (``manifest.json``: every file's size and sha256) and is
checked against it before use (:func:`check_entry`, sizes and sha256: 0.4 s for a 0.3 GB loop-0
entry in the page cache, 0.9 s from disk, on 2 EPYC cores; publishing it takes 0.9 s); a missing,
truncated or changed file, a half-written entry or one without a manifest (an older format) is
logged in one line, removed and recomputed, never loaded.

Compute-once: the first run to need an entry holds an exclusive lock on it (``fcntl.flock``, freed
by the OS if the process dies) until it has published it; another run wanting the same entry waits,
then reuses it. Entries are written to a temporary folder and renamed into place. ``reuse.enabled
=false`` switches it off; ``reuse.dir`` (default ``$SER_REUSE_DIR``, else ``$SER_CACHE_DIR/phases``, else
``~/.cache/ser/phases``)
holds the entries: a MiniLM loop-0 entry is ~0.3 GB (weights + AdamW state), a full entry ~0.1 GB.
``ser cache list`` shows them (kind, key, size, age, model/data/seed, valid or not) and ``ser cache
clear`` removes them (all, ``--kind``, ``--older-than DAYS`` or given keys).
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig

from ser import faults
from ser.reuse_key import file_digest, key_of, key_parts, phase_key, sha256_file, source_digest  # noqa: F401  (re-exported)

log = logging.getLogger("ser.reuse")
KINDS = ("whole", "loop0")
MANIFEST = "manifest.json"

# --------------------------------------------------------------------------------------------
# Entries
# --------------------------------------------------------------------------------------------

def default_dir() -> Path:
    """``$SER_REUSE_DIR``, else ``$SER_CACHE_DIR/phases``, else ``~/.cache/ser/phases``."""
    if os.environ.get("SER_REUSE_DIR"):
        return Path(os.environ["SER_REUSE_DIR"])
    return Path(os.environ.get("SER_CACHE_DIR", Path.home() / ".cache" / "ser")) / "phases"


def entry_files(folder: Path) -> list[Path]:
    """The files of an entry the manifest lists (all but the manifest and the ``done`` marker)."""
    return [f for f in sorted(folder.rglob("*"))
            if f.is_file() and str(f.relative_to(folder)) not in ("done", MANIFEST)]


def write_manifest(folder: Path) -> None:
    files = {str(f.relative_to(folder)): {"size": f.stat().st_size, "sha256": sha256_file(f)}
             for f in entry_files(folder)}
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=1))


def check_entry(entry: Path, digests: bool = True) -> str | None:
    """What is wrong with an entry, in a few words; None when it is complete and every file is as
    published (its size, and with ``digests`` its sha256, as the manifest says)."""
    if not (entry / "done").exists():
        return "half-written (no 'done' marker)"
    try:
        manifest = json.loads((entry / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return "no manifest (published by an older ser)"
    except (OSError, ValueError, KeyError, TypeError):
        return "unreadable manifest"
    for rel, want in manifest.items():
        f = entry / rel
        if not f.is_file():
            return f"{rel} is missing"
        if f.stat().st_size != want["size"]:
            return f"{rel} has {f.stat().st_size} bytes, {want['size']} were published (truncated?)"
    if digests:
        for rel, want in manifest.items():
            if sha256_file(entry / rel) != want["sha256"]:
                return f"{rel} differs from what was published (sha256)"
    return None


@dataclass
class EntryInfo:
    """One entry (or a temporary folder a publish left) as ``ser cache list`` shows it."""

    kind: str
    key: str
    path: Path
    size: int
    created: float  # seconds since the epoch
    meta: dict
    problem: str | None


class PhaseCache:
    """Entries ``<dir>/<kind>/<key>/`` (usable when :func:`check_entry` finds nothing wrong) and their locks."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(os.path.expanduser(str(root))) if root else default_dir()

    def entry(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def ready(self, kind: str, key: str) -> Path | None:
        """The entry when it is complete and as published; an invalid one is logged, removed and
        None returned, so the caller recomputes it (call it holding the entry's lock)."""
        e = self.entry(kind, key)
        if not e.exists():
            return None
        problem = check_entry(e)
        if problem is None:
            return e
        log.warning("reuse: entry %s is invalid (%s): removed, computing it again", e, problem)
        shutil.rmtree(e, ignore_errors=True)
        return None

    @contextlib.contextmanager
    def lock(self, kind: str, key: str, wait: bool = True) -> Iterator[bool]:
        """Exclusive while held; waits for another process computing the same entry (``wait=False``:
        yields False at once instead)."""
        path = self.root / kind / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                log.info("waiting for another run computing %s %s", kind, key)
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def publish(self, kind: str, key: str, files: dict[str, Path], meta: dict) -> Path:
        """Copy ``files`` (name -> file or folder) into the entry with ``meta.json`` and the
        manifest, atomically (``done`` is written last, then the folder renamed into place). Call it
        holding the entry's lock: a temporary folder of the same key is then one a killed run left."""
        final = self.entry(kind, key)
        for stale in final.parent.glob(f".{key}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = final.with_name(f".{key}.tmp-{os.getpid()}")
        tmp.mkdir(parents=True)
        for name, src in files.items():
            if Path(src).is_dir():
                shutil.copytree(src, tmp / name)
            else:
                shutil.copy2(src, tmp / name)
        faults.point("publish")  # tests kill here: the files copied, no manifest, no ``done``
        meta = {"kind": kind, "key": key, "created": datetime.datetime.now().isoformat(timespec="seconds"), **meta}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        write_manifest(tmp)
        (tmp / "done").write_text("")
        if final.exists():  # an invalid entry (ready() never returned it)
            shutil.rmtree(final)
        tmp.rename(final)
        return final

    def entries(self, digests: bool = False) -> list[EntryInfo]:
        """Every entry, and every temporary folder a publish left, oldest first."""
        out = []
        for kind_dir in sorted(p for p in self.root.glob("*") if p.is_dir()):
            for e in sorted(p for p in kind_dir.iterdir() if p.is_dir()):
                if e.name.startswith("."):  # .<key>.tmp-<pid>: a publish under way, or one that died
                    key, problem = e.name[1:].split(".tmp-")[0], "temporary folder of a publish (under way or died)"
                else:
                    key, problem = e.name, check_entry(e, digests)
                try:
                    meta = json.loads((e / "meta.json").read_text())
                except (OSError, ValueError):
                    meta = {}
                try:
                    size = sum(f.stat().st_size for f in e.rglob("*") if f.is_file())
                    created = (e / "done").stat().st_mtime if (e / "done").exists() else e.stat().st_mtime
                except FileNotFoundError:  # removed or renamed into place meanwhile by a run
                    continue
                out.append(EntryInfo(kind_dir.name, key, e, size, created, meta, problem))
        return sorted(out, key=lambda i: i.created)

    def remove(self, info: EntryInfo) -> bool:
        """Remove an entry unless a run holds its lock (computing or reading it); True if removed."""
        with self.lock(info.kind, info.key, wait=False) as held:
            if held:
                shutil.rmtree(info.path, ignore_errors=True)
            return held


def entry_meta(phase_dir: Path, parts: dict | None) -> dict:
    """An entry's ``meta.json``: where it came from, what ``ser cache list`` shows, and the key's parts."""
    parts = parts or {}
    return {"from": str(phase_dir), "model": (parts.get("model") or {}).get("name"),
            "data": (parts.get("data") or {}).get("name"), "seed": parts.get("seed"),
            "source": source_digest(), "key_parts": parts}


def copy_entry(entry: Path, dest: Path, skip: tuple[str, ...] = ("done", "meta.json", MANIFEST)) -> None:
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


def publish_whole(cache: PhaseCache, key: str, phase_dir: Path, parts: dict | None = None) -> None:
    entry = cache.publish("whole", key, _phase_files(phase_dir), entry_meta(phase_dir, parts))
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

    def __init__(self, cache: PhaseCache, key: str, phase_dir: Path, release, parts: dict | None = None):
        self.cache, self.key, self.phase_dir, self.release, self.parts = cache, key, phase_dir, release, parts

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
            entry = self.cache.publish("loop0", self.key, files, entry_meta(self.phase_dir, self.parts))
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

    from ser import acquisition as aq
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
    lengths = {k: sc[k] for k in ("a1_chars", "a2_chars", "a1_tokens", "a2_tokens") if k in sc}
    label = lambda scores, labeled, alive, mc: label_pool(  # noqa: E731
        scores, labeled, alive, sc["hidden"], thresholds_from_config(th), th.centring, th.get("scaling", "none"),
        cfg.get("selection"), val, mc=mc, lengths=lengths or None)
    acq = cfg.get("acquisition")  # acts after loop 0 is scored, as in the live loop (ser.acquisition)
    oracle = aq.make_oracle(acq, sc["hidden"], sc["pair_id"], sc["a1_first"]) if aq.is_active(acq) else None
    write = lambda req: aq.write_request(phase_dir, req, acq.rule, oracle.kind, sc["pair_id"])  # noqa: E731
    lab, acquired = aq.label_and_acquire(label, sc["pool"], sc.get("labeled"), sc["alive"], None, acq, oracle,
                                         cfg.seed, 0, 0, len(sc["hidden"]), None, write)
    diag = dict(meta["diag"], **lab.fields)
    diag["eval_s"] = diag.get("label_s", 0.0)
    diag["stop"] = "stop_status" if lab.stop else None
    diag["reused"] = key
    n_pool = len(sc["hidden"])
    alive = np.ones(n_pool, dtype=bool)
    dm_state = {"selections": [], "include_seed": True, "pool_alive": alive.tolist(), "human": []}
    if acquired is not None:  # as PreferenceDataModule.add_human
        dm_state["human"] = [{"loop": 1, "index": [int(i) for i in acquired.index],
                              "a1_better": [bool(x) for x in acquired.a1_better]}]
        alive[acquired.index] = False
        dm_state["pool_alive"] = alive.tolist()
    if not lab.stop:  # as SERLoop.apply_labeling
        if acquired is None or len(lab.pool_index):
            index = [int(i) for i in lab.pool_index]
            dm_state["selections"] = [{"loop": 1, "index": index,
                                       "first_is_chosen": [bool(x) for x in lab.first_is_chosen]}]
            if cfg.loop.remove_selected:
                alive[index] = False
                dm_state["pool_alive"] = alive.tolist()
        if not cfg.loop.keep_seed_pairs:
            dm_state["include_seed"] = False
    cb = dict(meta["callback"], loop=1, loop_start_epoch=cfg.loop.epochs_per_loop, history=[diag], finished=lab.stop)
    ck["callbacks"][_state_key(ck["callbacks"], "SERLoop")] = cb
    ck[_state_key(ck, "PreferenceDataModule")] = dm_state
    phase_dir.mkdir(parents=True, exist_ok=True)
    copy_entry(entry, phase_dir, skip=("done", "meta.json", MANIFEST, "loop0.ckpt", "loop0.json", "loop0_scores.npz"))
    lengths = {k: v[lab.arrays["pool_index"]] for k, v in lengths.items()}
    np.savez_compressed(phase_dir / "pool_scores_loop0.npz", **lab.arrays, **lengths)
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


# --------------------------------------------------------------------------------------------
# ser cache list | clear
# --------------------------------------------------------------------------------------------

def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def entry_line(info: EntryInfo) -> str:
    """``loop0  <key>  312.4 MB  2026-12-01 10:22  minilm/hh_rlhf seed 0  valid``"""
    m = info.meta
    what = f"{m.get('model') or '?'}/{m.get('data') or '?'} seed {m.get('seed', '?')}"
    when = datetime.datetime.fromtimestamp(info.created).strftime("%Y-%m-%d %H:%M")
    state = "valid" if info.problem is None else f"INVALID: {info.problem}"
    return f"{info.kind:<6} {info.key:<20}  {human_size(info.size):>9}  {when}  {what}  {state}"


def add_cache_args(p) -> None:
    p.add_argument("action", choices=("list", "clear"), help="list the entries, or remove them")
    p.add_argument("keys", nargs="*", metavar="KEY", help="only these entries (default: all); right after list/clear")
    p.add_argument("--dir", default=None, help="the cache folder (default: reuse.dir's default: $SER_REUSE_DIR, "
                                               "else $SER_CACHE_DIR/phases, else ~/.cache/ser/phases)")
    p.add_argument("--kind", choices=KINDS, help="only entries of this kind")
    p.add_argument("--older-than", type=float, metavar="DAYS", help="only entries published more than DAYS ago")
    p.add_argument("--verify", action="store_true",
                   help="list: also check every file's sha256 against the manifest (reads every entry; "
                        "sizes are always checked)")


def cli_cache(args) -> int:
    """``ser cache list|clear``: one line per selected entry, then the total."""
    cache = PhaseCache(args.dir)
    if not cache.root.is_dir():
        print(f"no phase cache at {cache.root}")
        return 0
    now = time.time()
    chosen = [i for i in cache.entries(digests=args.verify)
              if (not args.kind or i.kind == args.kind) and (not args.keys or i.key in args.keys)
              and (args.older_than is None or now - i.created > args.older_than * 86400)]
    if args.action == "list":
        for info in chosen:
            print(entry_line(info))
        bad = sum(i.problem is not None for i in chosen)
        print(f"total: {len(chosen)} entries, {human_size(sum(i.size for i in chosen))}"
              f"{f' ({bad} invalid)' if bad else ''} in {cache.root}")
        return 0
    freed = removed = 0
    for info in chosen:
        if cache.remove(info):
            freed, removed = freed + info.size, removed + 1
            print(f"removed {info.kind} {info.key} ({human_size(info.size)})")
        else:
            print(f"kept {info.kind} {info.key}: a run is computing or reading it (clear it when that run is done)")
    print(f"freed {human_size(freed)} ({removed} entries) in {cache.root}")
    return 0
