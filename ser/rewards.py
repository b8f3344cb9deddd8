"""Rewards of a batch of token ids from a reward model, in each layout a batch can have: padded
(:func:`sequence_rewards`, encoders and decoders), packed (:func:`packed_rewards`, ``data.packing``)
and prefix-shared (:func:`prefix_shared_rewards`, ``data.prefix_sharing``); the last two need a
decoder (:func:`require_decoder`). :mod:`ser.model` trains and scores through these.
"""
from __future__ import annotations

import torch

from ser.errors import ConfigError


def unwrap(model):
    """The transformers model inside a peft wrapper (LoRA layers stay injected)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def sequence_rewards(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """One scalar per sequence, read at the last real token (decoders) or the [CLS] head (encoders).

    Decoders: the backbone runs with position ids from the attention mask and the score head is
    applied at the rightmost real token, so left or right padding give the same reward.
    Encoders are fed right-padded batches (our collator always pads right).
    """
    hf = unwrap(model)
    if hasattr(hf, "score"):
        backbone = getattr(hf, hf.base_model_prefix)
        pos = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos).last_hidden_state
        last = (attention_mask * torch.arange(attention_mask.shape[1], device=attention_mask.device)).argmax(-1)
        h = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return hf.score(h).squeeze(-1).float()
    return model(input_ids=input_ids, attention_mask=attention_mask).logits.squeeze(-1).float()


def is_decoder(model) -> bool:
    """A causal-LM reward model (a ``score`` head on the last token), as opposed to an encoder."""
    return hasattr(unwrap(model), "score")


def require_decoder(model, option: str, name: str = "the model") -> None:
    """A layout of decoder batches (``option``: ``data.packing``, ``data.prefix_sharing``) needs a decoder:
    encoders read [CLS] with bidirectional attention."""
    if not is_decoder(model):
        raise ConfigError(f"{option}=true needs a decoder reward model (a causal LM with a score head); "
                          f"{name} is an encoder: set {option}=false")


def packed_rewards(model, input_ids: torch.Tensor, position_ids: torch.Tensor, last_index: torch.Tensor) -> torch.Tensor:
    """One scalar per packed sequence (:func:`ser.data.packing.pack_batch`), in ``last_index`` order.

    The backbone gets the position ids, no attention mask and no cache: transformers then finds the packed
    sequences from the position ids (a restart at 0 starts a new one) and masks attention to be
    causal within each sequence and blocked between them (``masking_utils.find_packed_sequence_indices``;
    through SDPA with an explicit boolean mask on CPU). The score head reads each last token.
    """
    require_decoder(model, "data.packing")
    # use_cache=False: with a KV cache (Llama's config default) transformers skips the packed detection
    return _last_token_rewards(unwrap(model), last_index, input_ids=input_ids, position_ids=position_ids)


def prefix_shared_rewards(model, input_ids: torch.Tensor, position_ids: torch.Tensor, prefix_mask: torch.Tensor,
                          last_index: torch.Tensor) -> torch.Tensor:
    """One scalar per side of a prefix-shared batch (:func:`ser.data.prefix_sharing.share_prefix_batch`), in
    ``last_index`` order (every chosen, then every rejected).

    The backbone gets the prepared 4D mask (transformers uses a 4D mask as given): bool for SDPA,
    additive (0 / most negative float) for eager attention; other attention kernels (flash) take no
    custom mask, so they are refused in one line.
    """
    require_decoder(model, "data.prefix_sharing")
    hf = unwrap(model)
    impl = getattr(hf.config, "_attn_implementation", None) or "sdpa"
    if impl == "eager":
        mask = torch.zeros(prefix_mask.shape, dtype=torch.float32, device=prefix_mask.device)
        mask = mask.masked_fill(~prefix_mask, torch.finfo(torch.float32).min)
    elif impl == "sdpa":
        mask = prefix_mask
    else:
        raise ConfigError(f"data.prefix_sharing=true needs attention that takes a custom mask (sdpa or eager); "
                          f"this model runs '{impl}': set data.prefix_sharing=false")
    return _last_token_rewards(hf, last_index, input_ids=input_ids, attention_mask=mask, position_ids=position_ids)


def _last_token_rewards(hf, last_index: torch.Tensor, **inputs) -> torch.Tensor:
    """The backbone on ``inputs`` (no cache), the score head at ``last_index`` (flat indices into rows x width)."""
    hidden = getattr(hf, hf.base_model_prefix)(**inputs, use_cache=False).last_hidden_state
    return hf.score(hidden.reshape(-1, hidden.shape[-1])[last_index]).squeeze(-1).float()
