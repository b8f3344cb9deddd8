"""Pure-torch building blocks for PPO on token sequences.

Everything here works on ``(batch, time)`` tensors of per-token quantities for
the *response* part of a sequence, with a ``mask`` that is 1 on real response
tokens and 0 on padding (rows may have different lengths). The conventions
follow TRL's PPO trainer and OpenRLHF:

* KL-shaped per-token rewards with the sequence score added at the last real
  response token (:func:`token_rewards`);
* generalized advantage estimation (:func:`gae`);
* clipped surrogate policy loss (:func:`policy_loss`) and clipped value loss
  (:func:`value_loss`);
* fixed / adaptive KL coefficient controllers (Ziegler et al., 2019).

No models, no Lightning: only tensor arithmetic, so every function can be unit
tested against hand-computed numbers.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F

__all__ = [
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "whiten_scores",
    "logprobs_from_logits",
    "entropy_from_logits",
    "KL_KINDS",
    "kl_penalty",
    "token_rewards",
    "gae",
    "policy_loss",
    "value_loss",
    "FixedKLController",
    "AdaptiveKLController",
]

_EPS = 1e-8
KL_KINDS = ("k1", "abs", "mse", "k3")


def _as_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Cast a (possibly bool/int) mask to ``like``'s floating dtype and device."""
    return mask.to(dtype=like.dtype, device=like.device)


# --------------------------------------------------------------------------- #
# masked statistics
# --------------------------------------------------------------------------- #
def masked_mean(
    x: torch.Tensor, mask: torch.Tensor, dim: Optional[int] = None
) -> torch.Tensor:
    """Mean of ``x`` over entries where ``mask`` is non-zero.

    ``masked_mean = sum(x * m) / sum(m)`` (over ``dim`` if given, else over all
    entries). An all-zero mask gives 0 rather than NaN.
    """
    m = _as_mask(mask, x)
    if dim is None:
        return (x * m).sum() / m.sum().clamp_min(_EPS)
    return (x * m).sum(dim) / m.sum(dim).clamp_min(_EPS)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over masked entries (all dims pooled).

    ``var = masked_mean((x - masked_mean(x))^2)``; if ``unbiased`` it is
    multiplied by Bessel's correction ``n / (n - 1)`` with ``n = sum(m)``
    (skipped when ``n <= 1``).
    """
    m = _as_mask(mask, x)
    mean = masked_mean(x, m)
    var = masked_mean((x - mean) ** 2, m)
    if unbiased:
        n = m.sum()
        var = torch.where(n > 1, var * n / (n - 1).clamp_min(_EPS), var)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalise ``x`` with mean/variance computed over masked entries only.

    ``w = (x - mu) / sqrt(var + 1e-8)``, with ``mu = masked_mean(x)`` and
    ``var = masked_var(x)`` (unbiased). If ``shift_mean`` is False the mean is
    added back: ``w + mu`` (only the scale is normalised). Padded entries are
    transformed too (as in TRL) but do not influence the statistics.
    """
    mean = masked_mean(x, mask)
    var = masked_var(x, mask, unbiased=True)
    whitened = (x - mean) * torch.rsqrt(var + _EPS)
    if not shift_mean:
        whitened = whitened + mean
    return whitened


def whiten_scores(scores: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Whiten a batch of sequence scores: ``(scores - mean) / (std + eps)``.

    ``std`` is the unbiased (n - 1) standard deviation, as ``Tensor.std``. A batch of one score has
    no spread: it is returned unchanged (the same tensor), not divided by a NaN std.
    """
    if scores.numel() <= 1:
        return scores
    return (scores - scores.mean()) / (scores.std() + eps)


# --------------------------------------------------------------------------- #
# logits helpers
# --------------------------------------------------------------------------- #
def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log-probability of ``labels`` under ``logits``.

    ``logp[..., t] = log_softmax(logits[..., t, :])[labels[..., t]]``.
    Shapes: logits ``(..., V)``, labels ``(...)`` -> ``(...)``. Half-precision
    logits are upcast to float32 for the softmax.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logp = F.log_softmax(logits, dim=-1)
    return logp.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of the categorical distribution given by ``logits``.

    ``H = -sum_v p_v log p_v = logsumexp(z) - sum_v softmax(z)_v z_v``.
    Shape ``(..., V)`` -> ``(...)``.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    p = F.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(dim=-1)


# --------------------------------------------------------------------------- #
# KL-shaped rewards
# --------------------------------------------------------------------------- #
def kl_penalty(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1"
) -> torch.Tensor:
    """Per-token KL estimate between the policy and the reference policy.

    With ``d = logp - logp_ref`` (samples drawn from the policy):

    * ``"k1"``:  ``d``                          (unbiased, can be negative)
    * ``"abs"``: ``|d|``
    * ``"mse"``: ``0.5 * d^2``
    * ``"k3"``:  ``(exp(-d) - 1) + d = (exp(r) - 1) - r`` with ``r = logp_ref - logp``
      (unbiased and always >= 0; Schulman's k3).
    """
    diff = logprobs - ref_logprobs
    if kind == "k1":
        return diff
    if kind == "abs":
        return diff.abs()
    if kind == "mse":
        return 0.5 * diff.square()
    if kind == "k3":
        r = -diff
        return torch.expm1(r) - r
    raise ValueError(f"unknown KL kind {kind!r}; expected one of {KL_KINDS}")


def token_rewards(
    score: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: Union[float, torch.Tensor],
    kind: str = "k1",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO rewards: KL penalty everywhere plus the score at the end.

    ``kl_t = kl_penalty(logp_t, logp_ref_t) * m_t`` and
    ``r_t = -kl_coef * kl_t + score * [t == last real token of the row]``.

    ``score`` has shape ``(B,)`` (or ``(B, 1)``); the other tensors are
    ``(B, T)``. The "last real token" is the largest ``t`` with ``m_t != 0``,
    so rows of different lengths (and any padding side) are handled; a row with
    no real token receives no score. Returns ``(rewards, kl)``, both ``(B, T)``
    and zero on padding.
    """
    m = _as_mask(mask, logprobs)
    kl = kl_penalty(logprobs, ref_logprobs, kind) * m
    rewards = -kl_coef * kl

    B, T = m.shape
    real = m != 0
    positions = torch.arange(T, device=m.device).expand(B, T)
    last = torch.where(real, positions, torch.zeros_like(positions)).max(dim=1).values
    has_token = real.any(dim=1).to(rewards.dtype)
    score = score.reshape(B).to(dtype=rewards.dtype, device=rewards.device)
    bonus = torch.zeros_like(rewards).scatter(1, last.unsqueeze(1), (score * has_token).unsqueeze(1))
    return rewards + bonus, kl


# --------------------------------------------------------------------------- #
# advantages
# --------------------------------------------------------------------------- #
@torch.no_grad()
def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al., 2016), backwards in time.

    With rewards and values zeroed on padding (so ``V`` beyond the last real
    token, and beyond ``T``, counts as 0):

    ``delta_t = r_t + gamma * V_{t+1} - V_t``
    ``A_t     = delta_t + gamma * lam * A_{t+1}``   (``A_T = 0``)
    ``R_t     = A_t + V_t``

    Advantages and returns are then zeroed on padded positions. Computed under
    ``no_grad`` (they are regression/advantage targets). Shapes ``(B, T)``.
    """
    m = _as_mask(mask, values)
    values = values * m
    rewards = rewards * m
    T = rewards.shape[-1]
    last_gae = torch.zeros_like(values[..., 0])
    advantages_reversed = []
    for t in reversed(range(T)):
        next_values = values[..., t + 1] if t + 1 < T else torch.zeros_like(last_gae)
        delta = rewards[..., t] + gamma * next_values - values[..., t]
        last_gae = delta + gamma * lam * last_gae
        advantages_reversed.append(last_gae)
    advantages = torch.stack(advantages_reversed[::-1], dim=-1) * m
    returns = advantages + values
    return advantages, returns


# --------------------------------------------------------------------------- #
# losses
# --------------------------------------------------------------------------- #
def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float = 0.2,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate objective (as a loss to minimise).

    ``rho = exp(logp - logp_old)``,
    ``loss = masked_mean(max(-A * rho, -A * clip(rho, 1 - eps, 1 + eps)))``,
    ``clip_fraction = masked_mean([-A * clip(rho) > -A * rho])`` (strictly),
    ``approx_kl = masked_mean(0.5 * (logp - logp_old)^2)``.

    Returns ``(loss, clip_fraction, approx_kl)``; only ``loss`` carries grad.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    pg_unclipped = -advantages * ratio
    pg_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(pg_unclipped, pg_clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((pg_clipped > pg_unclipped).to(ratio.dtype), mask)
        approx_kl = masked_mean(0.5 * log_ratio.square(), mask)
    return loss, clip_fraction, approx_kl


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float = 0.2,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped value loss.

    ``v_clip = clip(v, v_old - eps, v_old + eps)``,
    ``loss = 0.5 * masked_mean(max((v - R)^2, (v_clip - R)^2))``,
    ``clip_fraction = masked_mean([(v_clip - R)^2 > (v - R)^2])`` (strictly).

    Returns ``(loss, clip_fraction)``; only ``loss`` carries grad.
    """
    v_clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    loss_unclipped = (values - returns).square()
    loss_clipped = (v_clipped - returns).square()
    loss = 0.5 * masked_mean(torch.maximum(loss_unclipped, loss_clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((loss_clipped > loss_unclipped).to(values.dtype), mask)
    return loss, clip_fraction


# --------------------------------------------------------------------------- #
# KL coefficient controllers
# --------------------------------------------------------------------------- #
def _to_float(x: Union[float, torch.Tensor]) -> float:
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


class FixedKLController:
    """Constant KL coefficient: ``value`` never changes on ``update``."""

    def __init__(self, kl_coef: float) -> None:
        self.value: float = float(kl_coef)

    def update(self, current_kl: Union[float, torch.Tensor], n_steps: int) -> float:
        """No-op; returns the (unchanged) coefficient."""
        return self.value

    def state_dict(self) -> Dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al., 2019, "Fine-Tuning LMs from Human Preferences").

    On ``update(current_kl, n_steps)``:
    ``e = clip(current_kl / target - 1, -0.2, 0.2)``,
    ``value *= 1 + e * n_steps / horizon``.
    KL above target raises the coefficient, below target lowers it.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        if target <= 0:
            raise ValueError(f"target must be > 0, got {target}")
        if horizon <= 0:
            raise ValueError(f"horizon must be > 0, got {horizon}")
        self.value: float = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: Union[float, torch.Tensor], n_steps: int) -> float:
        """Apply one proportional-control step; returns the new coefficient."""
        proportional_error = min(max(_to_float(current_kl) / self.target - 1.0, -0.2), 0.2)
        mult = 1.0 + proportional_error * n_steps / self.horizon
        self.value *= mult
        return self.value

    def state_dict(self) -> Dict[str, Any]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.value = float(state["value"])
        self.target = float(state.get("target", self.target))
        self.horizon = float(state.get("horizon", self.horizon))
