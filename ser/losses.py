"""Pairwise reward-model losses (pure functions on chosen/rejected rewards)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("bradley_terry", "margin")


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """``mean(-logsigmoid(r_c - r_r - margin))``: what the authors' code trains."""
    return -F.logsigmoid(r_chosen - r_rejected - margin).mean()


def margin_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """``mean(max(0, Delta - (r_c - r_r)))``: the paper's Eq. 5 hinge with margin ``Delta``."""
    return torch.clamp(margin - (r_chosen - r_rejected), min=0).mean()


def centring_penalty(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """``mean((r_c + r_r)^2)``: keeps scores centred on 0 so that ``p = sigmoid(r)`` stays meaningful."""
    return ((r_chosen + r_rejected) ** 2).mean()


def pairwise_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, kind: str = "bradley_terry",
                  margin: float = 0.0, centring_coef: float = 0.0) -> torch.Tensor:
    """The mean loss over the batch's pairs (plus the centring penalty); an empty batch has none."""
    if r_chosen.numel() == 0:
        raise ValueError("pairwise_loss got an empty batch (0 pairs): the loss of no pairs is undefined")
    if kind == "bradley_terry":
        loss = bradley_terry_loss(r_chosen, r_rejected, margin)
    elif kind == "margin":
        loss = margin_loss(r_chosen, r_rejected, margin)
    else:
        raise ValueError(f"loss.kind='{kind}' must be one of {', '.join(LOSSES)}")
    if centring_coef:
        loss = loss + centring_coef * centring_penalty(r_chosen, r_rejected)
    return loss


def pair_metrics(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> dict[str, torch.Tensor]:
    """Accuracy (ties count as wrong), mean margin, and the mean/std of all rewards."""
    r = torch.cat([r_chosen, r_rejected])
    return {
        "accuracy": (r_chosen > r_rejected).float().mean(),
        "margin": (r_chosen - r_rejected).mean(),
        "reward_mean": r.mean(),
        "reward_std": r.std() if r.numel() > 1 else torch.zeros(()),
    }
