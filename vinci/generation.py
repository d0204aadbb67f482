"""Sampling answers from the policy: G completions per prompt, with their token masks.

Used by the ViRL rollout sampler, by held-out evaluation and by the SFT module's sample
display. Runs in eval mode under no_grad with the KV cache on, even when the model trains with
gradient checkpointing (which turns the cache off), and restores the previous mode after.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vinci.inputs import multimodal_token_ids  # also imported from here by older code


@dataclass
class Completions:
    sequences: torch.Tensor  # [N, P + L] prompt (left-padded) + completion, N = B * G
    completion_ids: torch.Tensor  # [N, L] completion tokens, pad after EOS
    completion_mask: torch.Tensor  # [N, L] 1 for tokens up to and including EOS
    texts: list[str]  # [N] decoded completions without special tokens
    prompt_length: int  # P


def completion_mask(ids: torch.Tensor, eos_ids: set[int]) -> torch.Tensor:
    """[N, L] mask that is 1 up to and including the first EOS token of each row."""
    is_eos = torch.zeros_like(ids, dtype=torch.bool)
    for eos in eos_ids:
        is_eos |= ids == eos
    after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0  # [N, L] strictly after the first EOS
    return (~after_eos).long()


def eos_token_ids(model, processor) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, (list, tuple)) else [ids] if ids is not None else [])
    ids.add(processor.tokenizer.eos_token_id)
    return {i for i in ids if i is not None}


@torch.no_grad()
def sample(
    model,
    processor,
    inputs: dict[str, torch.Tensor],
    num_samples: int = 1,
    max_new_tokens: int = 512,
    min_new_tokens: int = 0,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> Completions:
    """Generate `num_samples` completions per prompt; rows are prompt-major ([b0g0, b0g1, ...])."""
    was_training = model.training
    model.eval()
    eos = eos_token_ids(model, processor)
    try:
        sequences = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens or None,
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_p=top_p if do_sample else None,
            top_k=None,
            num_return_sequences=num_samples,
            use_cache=True,
            eos_token_id=sorted(eos),
            pad_token_id=processor.tokenizer.pad_token_id,
            suppress_tokens=multimodal_token_ids(model, processor.tokenizer) or None,
        )  # [N, P + L]
    finally:
        model.train(was_training)
    prompt_len = inputs["input_ids"].shape[1]
    ids = sequences[:, prompt_len:]  # [N, L]
    mask = completion_mask(ids, eos)  # [N, L]
    ids = ids.masked_fill(mask == 0, processor.tokenizer.pad_token_id)
    texts = processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
    return Completions(sequences, ids, mask, texts, prompt_len)
