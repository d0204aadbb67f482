"""Sampling answers from the policy: G completions per prompt, with their token masks.

Used by the ViRL rollout sampler, by held-out evaluation and by the SFT module's sample
display. Runs in eval mode under no_grad with the KV cache on, even when the model trains with
gradient checkpointing (which turns the cache off), and restores the previous mode after.

Sampling is exactly what its arguments say, whatever the model's released `generation_config.json`
sets: instruct models ship a repetition penalty, top-k, n-gram bans..., which would make rollouts
come from a distribution the ViRL update does not score (a biased gradient) and "greedy"
evaluation not greedy. Only the special-token ids are taken from the model's config.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

import torch

from vinci.inputs import multimodal_token_ids

SPECIAL_TOKENS = ("eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id")


@dataclass
class Completions:
    sequences: torch.Tensor  # [N, P + L] prompt (left-padded) + completion, N = B * G
    completion_ids: torch.Tensor  # [N, L] completion tokens, pad after EOS
    completion_mask: torch.Tensor  # [N, L] 1 for tokens up to and including EOS
    texts: list[str]  # [N] decoded completions without special tokens
    prompt_length: int  # P
    logp: Optional[torch.Tensor] = None  # [N, L] the sampler's log-prob of each token (after temperature, top-p)


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


def sampling_config(
    model,
    processor,
    num_samples: int,
    max_new_tokens: int,
    min_new_tokens: int,
    do_sample: bool,
    temperature: float,
    top_p: float,
):
    """A `GenerationConfig` built from scratch: the arguments, the special-token ids of the model's
    own config and vision tokens suppressed; every other field keeps transformers' neutral default."""
    from transformers import GenerationConfig

    released = model.generation_config
    pad = processor.tokenizer.pad_token_id
    return GenerationConfig(
        eos_token_id=sorted(eos_token_ids(model, processor)),
        pad_token_id=pad if pad is not None else released.pad_token_id,
        bos_token_id=released.bos_token_id,
        decoder_start_token_id=released.decoder_start_token_id,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        do_sample=do_sample,
        temperature=1.0,  # applied by SampledLogp, the last processor, which records what is sampled from
        top_p=1.0,
        top_k=0 if do_sample else None,  # off (transformers defaults to 50); greedy takes no top-k, and warns at 0
        num_return_sequences=num_samples,
        use_cache=True,
        suppress_tokens=multimodal_token_ids(model, processor.tokenizer) or None,
    )


class SampledLogp:
    """The last logits processor of a sampling `generate`: applies temperature and top-p itself
    (the generation config turns transformers' own off) and records the log-prob of each token
    drawn from the result, i.e. of the exact distribution sampled from.

    transformers runs custom processors before its temperature and top-p warpers, so a recorder
    there would see raw logits; as the final transform instead, what it records is what was
    sampled. Memory: one step's [N, V] log-softmax at a time, plus [N, L] gathered values, never
    [N, L, V]. Anything before it that the update does not apply (a processor, a dtype) shows as
    a gap between these log-probs and the update's.
    """

    def __init__(self, temperature: float, top_p: float):
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

        warpers = [TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []
        if top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
        self.warpers = LogitsProcessorList(warpers)
        self.previous: Optional[torch.Tensor] = None  # [N, V] log-softmax of the last step
        self.values: list[torch.Tensor] = []  # per step: [N] log-prob of the token drawn

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.collect(input_ids)
        scores = self.warpers(input_ids, scores)  # [N, V]
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def collect(self, input_ids: torch.Tensor) -> None:
        """Gather the previous step's log-prob of the token just appended (input_ids[:, -1])."""
        if self.previous is not None:
            self.values.append(self.previous.gather(1, input_ids[:, -1:]).squeeze(1))  # [N]
            self.previous = None

    def result(self, sequences: torch.Tensor, length: int) -> torch.Tensor:
        """[N, length] log-probs of the completion tokens (0 where nothing was drawn)."""
        self.collect(sequences)
        logp = torch.stack(self.values, dim=1) if self.values else sequences.new_zeros((len(sequences), 0), dtype=torch.float32)
        return torch.nn.functional.pad(logp, (0, length - logp.shape[1]))  # [N, L]


@contextmanager
def generation_defaults(model, config):
    """Make `config` the model's own generation config while `generate` runs.

    transformers fills every field a passed `generation_config` leaves unset (None) from the
    model's `generation_config` (5.x `_prepare_generation_config`), custom entries included, so
    passing a config alone still inherits, say, `min_p`, `bad_words_ids` or `sequence_bias` from
    a released model. With the config standing in for the model's, nothing else is read.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft: generate runs here
    released = base.generation_config
    base.generation_config = config
    try:
        yield
    finally:
        base.generation_config = released


@torch.no_grad()
def sample(
    model,
    processor,
    inputs: dict[str, torch.Tensor],
    num_samples: int = 1,
    max_new_tokens: int = 512,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    min_new_tokens: int = 0,
) -> Completions:
    """Generate `num_samples` completions per prompt; rows are prompt-major ([b0g0, b0g1, ...]).

    `min_new_tokens` > 0 bans EOS until that many tokens are out (for timing and memory checks
    at full length; it changes the sampled distribution, so not for training rollouts).
    """
    was_training = model.training
    model.eval()
    config = sampling_config(model, processor, num_samples, max_new_tokens, min_new_tokens, do_sample, temperature, top_p)
    eos = set(config.eos_token_id)
    recorder = SampledLogp(temperature, top_p) if do_sample else None
    processors = [recorder] if recorder else None
    try:
        with generation_defaults(model, config):
            sequences = model.generate(**inputs, generation_config=config, logits_processor=processors)  # [N, P + L]
    finally:
        model.train(was_training)
    prompt_len = inputs["input_ids"].shape[1]
    ids = sequences[:, prompt_len:]  # [N, L]
    mask = completion_mask(ids, eos)  # [N, L]
    ids = ids.masked_fill(mask == 0, processor.tokenizer.pad_token_id)
    texts = processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
    logp = recorder.result(sequences, ids.shape[1]) * mask if recorder else None  # [N, L]
    return Completions(sequences, ids, mask, texts, prompt_len, logp)
