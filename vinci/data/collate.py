"""Turn `Example`s into model inputs: SFT batches with masked labels, RL batches of prompts.

Chat formatting goes through the processor's own chat template, so any supported VLM gets its
own turn markers and image tokens. The `<image>` placeholder in a prompt marks where the image
goes in the user turn.

SFT labels: the whole sequence is tokenised once with the answer and once without; the answer
tokens are the suffix after the prompt, and everything else (prompt, image and padding tokens)
is -100. The check that the prompt is a token prefix of the full sequence catches chat
templates that would make the masking wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from PIL import Image

from vinci.inputs import collate_rows

IGNORE = -100  # label of a token that does not count in the loss


def user_turn(prompt: str) -> dict:
    """A chat message whose content puts the image where `<image>` stands (first if absent)."""
    before, sep, after = prompt.partition("<image>")
    if not sep:
        before, after = "", prompt
    content = ([{"type": "text", "text": before}] if before else []) + [{"type": "image"}]
    if after:
        content.append({"type": "text", "text": after})
    return {"role": "user", "content": content}


def prompt_text(processor, prompt: str) -> str:
    """The templated prompt, ending where the assistant's answer starts."""
    return processor.apply_chat_template([user_turn(prompt)], add_generation_prompt=True, tokenize=False)


def full_text(processor, prompt: str, answer: str) -> str:
    """The templated prompt followed by the answer and the template's end-of-turn."""
    messages = [user_turn(prompt), {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    return processor.apply_chat_template(messages, tokenize=False)


def pinned(inputs: dict) -> dict:
    """`inputs` with every tensor in page-locked memory (its copy to the GPU can then overlap compute)."""
    return {key: value.pin_memory() if isinstance(value, torch.Tensor) else value for key, value in inputs.items()}


@dataclass
class SFTBatch:
    inputs: dict[str, torch.Tensor]  # processor outputs: input_ids [B, T], attention_mask [B, T], pixel_values, ...
    labels: torch.Tensor  # [B, T] answer token ids, IGNORE elsewhere

    def pin_memory(self) -> SFTBatch:  # DataLoader(pin_memory=True) calls this; it leaves other objects unpinned
        return replace(self, inputs=pinned(self.inputs), labels=self.labels.pin_memory())


@dataclass
class RLBatch:
    inputs: dict[str, torch.Tensor]  # left-padded prompts: input_ids [B, P], attention_mask [B, P], pixel_values, ...
    images: list[Image.Image]  # [B] reference images, what renders are compared with
    languages: list[str]  # [B] canonical target language per prompt
    prompts: list[str]  # [B] raw prompt text (for logging)
    answers: list[Any]  # [B] reference answers or None
    sources: list[str] = field(default_factory=list)  # [B] where each row came from (file, file:row)
    ids: list[str] = field(default_factory=list)  # [B] stable file-name-safe ids; empty when any example has none

    def pin_memory(self) -> RLBatch:  # as SFTBatch.pin_memory; images stay PIL
        return replace(self, inputs=pinned(self.inputs))


def encode_sft(processor, example) -> tuple[dict[str, torch.Tensor], int]:
    """Tokenise one example with its answer; returns (inputs with batch dim 1, prompt length)."""
    prompt = prompt_text(processor, example.prompt)
    full = full_text(processor, example.prompt, example.answer)
    if not full.startswith(prompt):
        raise ValueError(f"{example.source}: the chat template does not put the answer after the prompt")
    head = processor(text=[prompt], images=[example.image], return_tensors="pt")
    whole = processor(text=[full], images=[example.image], return_tensors="pt")
    n_prompt = head["input_ids"].shape[1]
    if not torch.equal(whole["input_ids"][0, :n_prompt], head["input_ids"][0]):
        raise ValueError(f"{example.source}: the prompt does not tokenise to a prefix of prompt + answer")
    return whole, n_prompt


def _pad_right(rows: list[torch.Tensor], value: int) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=value)


class SFTCollator:
    """Examples -> SFTBatch. Sequences are right-padded; pads are masked out of loss and attention.

    How each processor output joins the batch (packed Qwen patches, Idefics3 tiles, per-token
    extras) is `vinci.inputs.collate_rows`'s business.
    """

    def __init__(self, processor):
        self.processor = processor
        self.pad_id = processor.tokenizer.pad_token_id

    def __call__(self, examples) -> SFTBatch:
        encoded, labels = [], []
        for example in examples:
            whole, n_prompt = encode_sft(self.processor, example)
            label = whole["input_ids"][0].clone()  # [T]
            label[:n_prompt] = IGNORE
            encoded.append(dict(whole))
            labels.append(label)
        inputs = collate_rows(encoded, self.pad_id)  # input_ids [B, T], attention_mask [B, T], pixel_values, ...
        return SFTBatch(inputs=inputs, labels=_pad_right(labels, IGNORE))


class RLCollator:
    """Examples -> RLBatch of left-padded prompts, ready for `generate`."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, examples) -> RLBatch:
        self.processor.tokenizer.padding_side = "left"
        texts = [prompt_text(self.processor, e.prompt) for e in examples]
        inputs = self.processor(text=texts, images=[e.image for e in examples], padding=True, return_tensors="pt")
        return RLBatch(
            inputs=dict(inputs),
            images=[e.image for e in examples],
            languages=[e.language for e in examples],
            prompts=[e.prompt for e in examples],
            answers=[e.answer for e in examples],
            sources=[e.source for e in examples],
            ids=_ids(examples),
        )


def _ids(examples) -> list[str]:
    """Every example's id, or none at all: a partial list would misalign ids and rows."""
    ids = [getattr(e, "id", None) for e in examples]
    return [] if None in ids else ids
