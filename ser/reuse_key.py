"""The content key of a reuse-cache entry (:mod:`ser.reuse`): everything that changes a phase's
result, as a dict of named parts (:func:`key_parts`, written into each entry's ``meta.json`` so a user
can see why two runs did or did not share) hashed by :func:`key_of`.

The parts: the resolved config that reaches the phase (never the thresholds, the selection or the
acquisition of human labels, which act after loop 0 is scored); every data file it reads, by its
path relative to its data root and its content digest; hub dataset ids and revisions; the model's and tokenizer's weights identity (a local folder's
file digests, an offline package's version, a hub id and revision); the versions of the libraries
that compute; the numerics (resolved precision, thread count, CPU capability and ISA caps, CUDA
device); and a digest of the ``ser`` source, so edited code never reuses stale work.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ser.data import resolve_data_path
from ser.data.formats import DATA_DIR_ENV

PACKAGE = Path(__file__).resolve().parent
#: trainer keys that change what is shown, not what is computed (precision: its resolved value is
#: in the numerics part, so ``auto`` and the value it resolves to share)
_DISPLAY_KEYS = {"enable_progress_bar", "enable_model_summary", "log_every_n_steps", "default_root_dir", "precision"}
#: installed distributions whose version can change a result
LIBRARIES = ("torch", "transformers", "pytorch-lightning", "peft", "datasets", "numpy", "tokenizers", "safetensors",
             "markdownify")  # markdownify renders StackExchange HTML (data.html=text)
#: files of a model folder that from_pretrained reads (weights, config, tokenizer), at its top level
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json", ".txt", ".model", ".tiktoken")

# --------------------------------------------------------------------------------------------
# The key
# --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """Digest of every ``ser/**/*.py`` file: cached work is never reused across code changes."""
    h = hashlib.sha256()
    for f in sorted(PACKAGE.rglob("*.py")):
        h.update(str(f.relative_to(PACKAGE)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))[:16]


def file_digest(path: Path) -> str:
    """Content digest of a file, read once per process while its size and mtime stay the same."""
    st = path.stat()
    return _file_digest(str(path), st.st_size, st.st_mtime_ns)


def data_sources(dcfg: DictConfig) -> dict[str, tuple[list[str], str | None]]:
    """Where a data config names local files -> (those files, the data root they are read under),
    as the DataModule reads them: its files, test files, and each evaluation set's files."""
    root = dcfg.get("data_dir") or os.environ.get(DATA_DIR_ENV)
    out = {"files": (list(dcfg.get("files") or []), root), "test_files": (list(dcfg.get("test_files") or []), root)}
    for name, spec in (dcfg.get("eval_sets") or {}).items():
        files = spec.get("test_files") or spec.get("files") or []
        out[f"eval_sets.{name}"] = (list(files), spec.get("data_dir") or root)
    return {where: src for where, src in out.items() if src[0]}


def path_under_root(path: Path, root: str | None) -> str:
    """``path`` relative to the data root when it lies under it (a key shared across machines that
    keep the data elsewhere), else absolute."""
    path = Path(os.path.abspath(path))
    if root:
        with contextlib.suppress(ValueError):
            return str(path.relative_to(os.path.abspath(os.path.expanduser(root))))
    return str(path)


def data_file_digests(dcfg: DictConfig) -> dict[str, dict[str, str]]:
    """Where -> {path under the data root: content digest} of every local file a data config reads."""
    out = {}
    for where, (files, root) in data_sources(dcfg).items():
        paths = [resolve_data_path(f, root) for f in files]
        out[where] = {path_under_root(p, root): file_digest(p) for p in paths}
    return out


def hub_data(dcfg: DictConfig) -> dict[str, dict]:
    """The hub data sets a data config (and its evaluation sets) reads, id and revision: those
    without local files (local files win, as in ``ser.data.load_pairs``)."""
    specs = {"data": (dcfg, dcfg.get("files"))}
    for name, spec in (dcfg.get("eval_sets") or {}).items():
        specs[f"eval_sets.{name}"] = (spec, spec.get("test_files") or spec.get("files"))
    return {where: {"id": s.get("hub_id"), "revision": s.get("hub_revision")}
            for where, (s, local) in specs.items() if s.get("hub_id") and not local}


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    return {"python": platform.python_version(), **{name: package_version(name) for name in LIBRARIES}}


def folder_digest(folder: Path) -> dict[str, str]:
    """File name -> content digest of a model folder's weight, config and tokenizer files."""
    return {f.name: file_digest(f) for f in sorted(folder.iterdir()) if f.is_file() and f.suffix in MODEL_FILE_SUFFIXES}


def files_identity(mcfg: DictConfig) -> dict:
    """What identifies the files at ``mcfg.name_or_path``, found as ``ser.model.resolve_pretrained``
    finds them: a local folder by its content, an offline package copy by package and version, a hub
    id by its configured revision (else the id alone)."""
    from ser.model import resolve_pretrained

    src = resolve_pretrained(mcfg)
    if not Path(src).is_dir():
        return {"hub": src, "revision": mcfg.get("revision")}
    if Path(os.path.expanduser(mcfg.name_or_path)).is_dir():
        return {"folder": folder_digest(Path(src))}
    off = mcfg.offline
    return {"package": off.package, "version": package_version(off.package), "subdir": off.get("subdir"),
            "gguf_file": off.get("gguf_file")}


def numerics(trainer: DictConfig) -> dict:
    """What makes the same computation round differently: the precision actually used, torch's
    thread count (reduction order), the CPU capability and its caps, and the CUDA device."""
    import torch

    from ser.precision import resolve_precision, uses_cuda

    precision = str(trainer.get("precision") or "32-true")
    if precision == "auto":
        precision = resolve_precision(precision, trainer.get("accelerator")).precision
    out = {"precision": precision, "threads": torch.get_num_threads(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA"),
           "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY")}
    if uses_cuda(trainer.get("accelerator")) and torch.cuda.is_available():
        out["cuda_device"] = torch.cuda.get_device_name(0)
    return out


def key_parts(cfg: DictConfig, kind: str) -> dict:
    """Everything a ``whole`` phase or a SER phase's ``loop0`` depends on, by name."""
    container = functools.partial(OmegaConf.to_container, resolve=True)
    trainer = {k: v for k, v in container(cfg.trainer).items() if k not in _DISPLAY_KEYS}
    data = container(cfg.data)
    data.pop("data_dir", None)  # where the files are does not matter: their paths under it and content do
    for spec in (data.get("eval_sets") or {}).values():
        if isinstance(spec, dict):
            spec.pop("data_dir", None)
    return {
        "kind": kind, "seed": cfg.seed, "labeled_fraction": cfg.labeled_fraction, "export": cfg.export,
        "model": container(cfg.model), "data": data,
        "loss": container(cfg.loss), "optim": container(cfg.optim),
        "trainer": trainer, "float32_matmul_precision": cfg.get("float32_matmul_precision"),
        # what of the loop reaches loop 0 (or a phase without loops); never the thresholds
        "loop": {k: cfg.loop.get(k) for k in ("epochs_per_loop", "score_batch_size", "restart_from_seed", "select")},
        "data_files": data_file_digests(cfg.data),
        "hub_data": hub_data(cfg.data),
        # random weights are made from model.config and model.init_seed, both in the key
        "weights": {"random_init": True} if cfg.model.get("random_init") else files_identity(cfg.model),
        "tokenizer": files_identity(cfg.model.get("tokenizer") or cfg.model),
        "libraries": library_versions(),
        "numerics": numerics(cfg.trainer),
        "source": source_digest(),
    }


def key_of(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def phase_key(cfg: DictConfig, kind: str) -> str:
    """The content key of a ``whole`` phase or a SER phase's ``loop0``."""
    return key_of(key_parts(cfg, kind))
