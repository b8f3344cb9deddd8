"""Shared helpers of the benchmarks: set-up, configs, timing, memory, tables and JSON results.

Every benchmark prints a table of what it measured in that run and writes the same figures to
``benchmarks/results/<name>.json`` (``<name>-quick.json`` with ``--quick``, so that a smoke run
never overwrites the figures of a full run).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
RESULTS = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------

def default_threads() -> int:
    """``OMP_NUM_THREADS`` when set (smoke runs use 1), else 2 (the machine the targets are for)."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS") or 2))
    except ValueError:
        return 2


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="short smoke mode (a few batches, small inputs)")
    p.add_argument("--threads", type=int, default=default_threads(),
                   help="torch intra-op threads (default: $OMP_NUM_THREADS or 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="JSON path (default: benchmarks/results/<name>[-quick].json)")
    return p


def setup_env(threads: int) -> None:
    """Quiet, reproducible, offline-friendly process set-up; call before loading models."""
    os.environ.setdefault("SER_DATA_DIR", str((ROOT / ".." / "shared" / "data").resolve()))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_MODE", "offline")
    import logging
    import warnings

    import torch

    torch.set_num_threads(int(threads))
    warnings.filterwarnings("ignore")
    import pytorch_lightning  # noqa: F401 - sets its own logger levels on import; override them after

    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "transformers",
                 "datasets", "accelerate", "trl", "ser", "pytorch_lightning.utilities.rank_zero",
                 "lightning.pytorch.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except Exception:  # noqa: BLE001 - cosmetics only
        pass


def compose(overrides: Sequence[str] = ()):
    """The config ``python -m ser.train OVERRIDES`` would use (``output_dir`` set to a dummy path)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import open_dict

    import ser.schema  # noqa: F401  registers the config schema conf/train.yaml starts from

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=list(overrides), return_hydra_config=False)
    with open_dict(cfg):
        cfg.output_dir = "/tmp/ser-bench-unused"
    return cfg


def machine_info(threads: int) -> dict:
    import torch
    import transformers

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "loadavg_1_5_15_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    for mod in ("pytorch_lightning", "trl"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            info[mod] = None
    return info


def cpu_line() -> str:
    """The CPU as ``lscpu`` names it, its native-bf16 flags, torch's CPU capability and any ISA caps:
    ``Intel(R) Xeon(R) ...; bf16 flags: amx_bf16, avx512_bf16; torch CPU capability AVX512``
    (``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` emulate an AVX2-only CPU and are shown)."""
    import subprocess

    import torch

    from ser.precision import BF16_CPU_FLAGS

    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name":
                model = value.strip()
            elif key.strip() == "Flags":
                flags = set(value.split())
    except (OSError, subprocess.CalledProcessError):
        model += " (lscpu not available)"
    bf = sorted(f for f in BF16_CPU_FLAGS if f in flags)
    parts = [model, f"bf16 flags: {', '.join(bf) if bf else 'none'}",
             f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}"]
    for env in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        if os.environ.get(env):
            parts.append(f"{env}={os.environ[env]}")
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------
# Timing and memory
# --------------------------------------------------------------------------------------------

class Timer:
    """``with Timer() as t: ...`` then ``t.s`` (seconds, perf_counter)."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        self.s = float("nan")
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0
        return False


def rss_mb(collect: bool = True) -> float:
    """Current resident set size of this process in MiB (psutil; /proc fallback).

    ``collect``: first ``gc.collect()`` and glibc's ``malloc_trim(0)``, so that memory already freed
    but still held by the allocator's arenas does not count (without the trim, the same loop
    measured flat in one run and +866 MiB in the next, depending on how freed blocks were reused).
    """
    if collect:
        gc.collect()
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: RSS includes allocator-held free memory
            pass
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except Exception:  # noqa: BLE001
        try:
            pages = int(Path("/proc/self/statm").read_text().split()[1])
            return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
        except OSError:
            return float("nan")


def peak_rss_mb() -> float:
    """Peak RSS of this process so far in MiB (``ru_maxrss``, KiB on Linux)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / 2**20


def token_counts(attention_mask) -> tuple[int, int]:
    """(real tokens, all tokens incl. padding) of one batch: ``mask.sum()`` and ``mask.numel()``."""
    return int(attention_mask.sum().item()), int(attention_mask.numel())


def fresh_net(cfg, tok):
    """The same initial weights for every run (pretrained body, head seeded by ``cfg.seed``)."""
    import torch

    from ser.model import build_hf_model

    torch.manual_seed(cfg.seed)
    return build_hf_model(cfg.model, tok)


def fit_ser(cfg, tok, dm, steps: int, clock):
    """ser's own Lightning path for ``steps`` training steps on ``dm``: a fresh :class:`RewardModel`
    and the configured trainer (no checkpoints, no validation, logger in a temporary folder), the
    callback ``clock`` timing each step. Returns the trained module."""
    import tempfile

    from hydra.utils import instantiate

    from ser.model import RewardModel

    dm.trainer = None  # Lightning asks the DataModule for the loader (epoch 0: the same batches)
    module = RewardModel(fresh_net(cfg, tok), cfg.loss, cfg.optim)
    module.set_schedule(0, steps)
    with tempfile.TemporaryDirectory(prefix="ser-bench-") as tmp:
        logger = instantiate(cfg.logger, save_dir=tmp) if cfg.get("logger") and "_target_" in cfg.logger else False
        trainer = instantiate(
            cfg.trainer, max_epochs=1, max_steps=steps, callbacks=[clock], logger=logger,
            enable_progress_bar=False, enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0,
            use_distributed_sampler=False, reload_dataloaders_every_n_epochs=1, default_root_dir=tmp)
        trainer.fit(module, datamodule=dm)
    return module


def raw_optimizer(net, o, steps: int, **adamw):
    """The plain PyTorch baseline's ``(optimizer, scheduler, trainable params)``: AdamW with ser's
    weight-decay groups and the warm-up-then-linear schedule of ``optim`` config ``o`` over ``steps``."""
    import torch

    from ser.model import warmup_linear

    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": o.weight_decay},
                             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                            lr=o.lr, betas=tuple(o.betas), eps=o.eps, **adamw)
    warm = o.warmup_steps if o.warmup_steps >= 1 else math.ceil(o.warmup_steps * steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_linear(s, steps, int(warm)))
    return opt, sched, params


def raw_bt_step(net, batch, opt, sched, params, clip, ctx=None) -> int:
    """One Bradley-Terry step in plain PyTorch on a padded batch (chosen rows, then rejected), under
    ``ctx`` (e.g. bf16 autocast) when given; returns the pairs."""
    import contextlib

    import torch
    import torch.nn.functional as F

    with ctx if ctx is not None else contextlib.nullcontext():
        r = net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1).float()
        n = r.shape[0] // 2
        loss = -F.logsigmoid(r[:n] - r[n:]).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    sched.step()
    return n


def window(times: Sequence[float], tokens: Sequence[tuple[int, int]], pairs: Sequence[int],
           first: int, last: int | None = None) -> dict:
    """Throughput over steps ``first .. last-1``.

    ``times[i]`` is the wall clock at the end of step ``i`` (after the optimizer step), so the
    window starts at the end of step ``first-1``: everything a step costs (data, forward,
    backward, optimizer, logging) is inside. ``first >= 1`` (step 0 is always warm-up).
    """
    last = len(times) if last is None else min(last, len(times))
    if first < 1 or last - first < 1:
        raise ValueError(f"empty timing window [{first}, {last}) of {len(times)} steps")
    dt = times[last - 1] - times[first - 1]
    real = sum(t[0] for t in tokens[first:last])
    total = sum(t[1] for t in tokens[first:last])
    n_pairs = sum(pairs[first:last])
    return {"steps": last - first, "seconds": dt, "real_tokens": real, "all_tokens": total,
            "pairs": n_pairs, "real_tok_s": real / dt, "all_tok_s": total / dt, "pairs_s": n_pairs / dt,
            "s_per_step": dt / (last - first), "padding_share": 1 - real / total if total else float("nan")}


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else float("nan")


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.1f}"
        return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{digits}g}"
    return str(v)


def table(rows: Iterable[dict], columns: Sequence[str], title: str | None = None) -> str:
    """A GitHub-markdown table (so it can be pasted into the README as printed)."""
    rows = list(rows)
    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    out = []
    if title:
        out.append(f"\n### {title}")
    out.append("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |")
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        out.append("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |")
    text = "\n".join(out)
    print(text, flush=True)
    return text


def check_line(name: str, value: float, target: float, op: str = ">=") -> dict:
    """One target: prints ``PASS/FAIL name: value op target`` and returns it as a dict."""
    ok = (value >= target) if op == ">=" else (value <= target)
    if isinstance(value, float) and math.isnan(value):
        ok = False
    print(f"  {'PASS' if ok else 'FAIL'}  {name}: {fmt(value)} (target {op} {fmt(target)})", flush=True)
    return {"name": name, "value": value, "target": target, "op": op, "met": bool(ok)}


def results_path(name: str, quick: bool, out: Path | None = None) -> Path:
    return Path(out) if out else RESULTS / f"{name}{'-quick' if quick else ''}.json"


def _clean(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None
    if hasattr(o, "item") and not isinstance(o, (str, bytes)):
        try:
            return _clean(o.item())
        except Exception:  # noqa: BLE001
            return str(o)
    if isinstance(o, Path):
        return str(o)
    return o


def write_results(name: str, payload: dict, quick: bool, out: Path | None = None) -> Path:
    path = results_path(name, quick, out)
    if isinstance(payload.get("machine"), dict):  # another process busy during the run shows up here
        payload["machine"]["loadavg_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(payload), indent=2) + "\n")
    os.replace(tmp, path)
    print(f"\nfigures written to {path}", flush=True)
    return path


@contextmanager
def section(title: str):
    t0 = time.perf_counter()
    print(f"\n== {title}", flush=True)
    yield
    print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)
