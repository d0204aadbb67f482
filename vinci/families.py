"""Tiny-from-config fixtures of every model family vinci claims, built offline.

One table, `FAMILIES`: family name -> how to build its tiny version. Each build is the family's
real model class and real processor and image-processor classes, with every size shrunk, seeded
random weights, a byte-level BPE tokenizer trained on the synthetic corpus (`vinci.tiny`), the
family's own special tokens, and a chat template written to behave like the released model's:

    qwen2_vl, qwen2_5_vl  ChatML; "You are a helpful assistant." as the default system turn;
                          an image is <|vision_start|><|image_pad|><|vision_end|>, and the
                          processor expands <|image_pad|> to one token per 2x2 merged patches
    qwen3_vl              the same ChatML and image markers, without a default system turn
    idefics3              SmolVLM's: "<|im_start|>User:<image>...<end_of_utterance>\\nAssistant:";
                          <image> expands to tiles, <fake_token_around_image><row_i_col_j><image>*n
                          per tile, then <global-img> and the whole image's tokens

What each tiny build keeps of the architecture it stands for:
- Qwen2.5-VL: window attention in the vision tower. The window is 56 px (2x2 merged tokens), so
  a 112 px image already spans several windows; block 0 attends within windows, the last block
  is a full-attention block (fullatt_block_indexes), as in the released configs.
- Qwen3-VL: deepstack. One vision block more than the spec, and every block but the last feeds
  its features to the matching early decoder layer (deepstack_visual_indexes); interleaved M-RoPE.
- Idefics3 (SmolVLM): image splitting into 64 px tiles plus a global view, pixel shuffle by 2
  (4 tokens per tile), a Llama decoder.

    python -m vinci.families --family qwen3_vl --out artifacts/tiny-qwen3-vl
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from vinci.tiny import (
    TinySpec,
    decoder_sizes,
    is_built,
    mrope_sections,
    qwen2_vl_config,
    qwen2_vl_processor,
    train_tokenizer,
    training_texts,
    write_model_dir,
)

log = logging.getLogger(__name__)

QWEN_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
               "<|image_pad|>", "<|video_pad|>")
IDEFICS3_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<end_of_utterance>", "<fake_token_around_image>",
                   "<image>", "<global-img>") + tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))
IDEFICS3_TILE = 64  # px per tile: the vision tower's image_size and the processor's max_image_size
IDEFICS3_PATCH = 16  # px per vision patch: a tile is 4x4 patches, 2x2 tokens after pixel shuffle


def chatml_template(system: str | None) -> str:
    """ChatML with Qwen's image and video markers; `system` is the default system turn, if any."""
    default = (
        "{% if loop.first and message['role'] != 'system' %}"
        f"<|im_start|>system\n{system}<|im_end|>\n{{% endif %}}"
    ) if system else ""
    return (
        "{% for message in messages %}" + default + "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for part in message['content'] %}"
        "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
        "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
        "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


# SmolVLM's turns: "Role:" straight before an image that opens the turn, "Role: " before text.
IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}: {{ message['content'] }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}<image>{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


@dataclass(frozen=True)
class Family:
    """How to build one family's tiny model: its tokens and template, then config and processor."""

    model_class: str  # transformers class name, also what AutoModelForImageTextToText resolves to
    special_tokens: tuple[str, ...]  # trained into the tokenizer first, in this order
    chat_template: str
    eos: str  # end of the assistant's turn
    pad: str
    config: Callable  # (tokenizer, spec) -> model config
    processor: Callable  # (tokenizer, spec, chat_template) -> processor
    bos: str | None = None


def _ids(tokenizer, tokens) -> dict[str, int]:
    return {token: tokenizer.convert_tokens_to_ids(token) for token in tokens}


def _qwen_text(tokenizer, spec: TinySpec, sections: list[int], **rope) -> dict:
    """The decoder part shared by the Qwen-VL configs; `sections` splits M-RoPE's frequencies."""
    ids = _ids(tokenizer, QWEN_TOKENS)
    return dict(
        **decoder_sizes(tokenizer, spec),
        rope_parameters={"rope_type": "default", "mrope_section": sections, **rope},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )


def _qwen_markers(tokenizer) -> dict:
    ids = _ids(tokenizer, QWEN_TOKENS)
    return dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def _qwen2_5_vl_config(tokenizer, spec: TinySpec):
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config=_qwen_text(tokenizer, spec, mrope_sections(spec.hidden_size // spec.heads), rope_theta=1000000.0),
        vision_config=dict(
            depth=spec.vision_depth,
            hidden_size=spec.vision_dim,
            intermediate_size=2 * spec.vision_dim,
            num_heads=2,
            out_hidden_size=spec.hidden_size,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=56,  # px: 2x2 merged tokens per window
            fullatt_block_indexes=[spec.vision_depth - 1],  # the rest attend within windows
            tokens_per_second=2,
        ),
        tie_word_embeddings=True,
        **_qwen_markers(tokenizer),
    )


def _qwen2_5_vl_processor(tokenizer, spec: TinySpec, chat_template: str):
    from transformers import Qwen2_5_VLProcessor

    return qwen2_vl_processor(tokenizer, spec, chat_template, Qwen2_5_VLProcessor)


def _qwen3_vl_config(tokenizer, spec: TinySpec):
    from transformers import Qwen3VLConfig

    half = spec.hidden_size // spec.heads // 2
    spatial = half * 20 // 64  # Qwen3-VL's (24, 20, 20) of 64 frequencies, interleaved t, h, w, t, h, w, ...
    sections = [half - 2 * spatial, spatial, spatial]
    text = _qwen_text(tokenizer, spec, sections, rope_theta=5000000.0, mrope_interleaved=True)
    return Qwen3VLConfig(
        text_config=dict(text, head_dim=spec.hidden_size // spec.heads),
        vision_config=dict(
            depth=spec.vision_depth + 1,
            hidden_size=spec.vision_dim,
            intermediate_size=2 * spec.vision_dim,
            num_heads=2,
            out_hidden_size=spec.hidden_size,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            num_position_embeddings=256,  # a learned 16x16 grid, interpolated to each image
            deepstack_visual_indexes=list(range(spec.vision_depth)),  # every block but the last
        ),
        tie_word_embeddings=True,
        **_qwen_markers(tokenizer),
    )


def _qwen3_vl_processor(tokenizer, spec: TinySpec, chat_template: str):
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    half = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], patch_size=16, merge_size=2)
    return Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=spec.min_pixels, max_pixels=spec.max_pixels, **half),
        video_processor=Qwen3VLVideoProcessor(**half),
        tokenizer=tokenizer,
        chat_template=chat_template,
    )


def _idefics3_config(tokenizer, spec: TinySpec):
    from transformers import Idefics3Config

    ids = _ids(tokenizer, IDEFICS3_TOKENS)
    return Idefics3Config(
        text_config=dict(
            model_type="llama",
            **decoder_sizes(tokenizer, spec),
            rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
            bos_token_id=ids["<|im_start|>"],
            eos_token_id=ids["<end_of_utterance>"],
            pad_token_id=ids["<|im_end|>"],
            tie_word_embeddings=True,
        ),
        vision_config=dict(
            hidden_size=spec.vision_dim,
            intermediate_size=2 * spec.vision_dim,
            num_hidden_layers=spec.vision_depth,
            num_attention_heads=2,
            image_size=IDEFICS3_TILE,
            patch_size=IDEFICS3_PATCH,
        ),
        scale_factor=2,
        image_token_id=ids["<image>"],
        tie_word_embeddings=True,
        pad_token_id=ids["<|im_end|>"],
    )


def _idefics3_processor(tokenizer, spec: TinySpec, chat_template: str):
    from transformers import Idefics3ImageProcessor, Idefics3Processor

    return Idefics3Processor(
        image_processor=Idefics3ImageProcessor(
            size={"longest_edge": 2 * IDEFICS3_TILE},  # images are scaled to fit 2x2 tiles
            max_image_size={"longest_edge": IDEFICS3_TILE},
            do_image_splitting=True,
        ),
        tokenizer=tokenizer,
        image_seq_len=(IDEFICS3_TILE // IDEFICS3_PATCH) ** 2 // 2**2,  # tokens per tile after pixel shuffle
        chat_template=chat_template,
    )


QWEN2_TEMPLATE = chatml_template("You are a helpful assistant.")  # Qwen2-VL's and Qwen2.5-VL's
FAMILIES: dict[str, Family] = {
    "qwen2_vl": Family("Qwen2VLForConditionalGeneration", QWEN_TOKENS, QWEN2_TEMPLATE,
                       "<|im_end|>", "<|endoftext|>", qwen2_vl_config, qwen2_vl_processor),
    "qwen2_5_vl": Family("Qwen2_5_VLForConditionalGeneration", QWEN_TOKENS, QWEN2_TEMPLATE,
                         "<|im_end|>", "<|endoftext|>", _qwen2_5_vl_config, _qwen2_5_vl_processor),
    "qwen3_vl": Family("Qwen3VLForConditionalGeneration", QWEN_TOKENS, chatml_template(None),
                       "<|im_end|>", "<|endoftext|>", _qwen3_vl_config, _qwen3_vl_processor),
    "idefics3": Family("Idefics3ForConditionalGeneration", IDEFICS3_TOKENS, IDEFICS3_TEMPLATE,
                       "<end_of_utterance>", "<|im_end|>", _idefics3_config, _idefics3_processor, bos="<|im_start|>"),
}


def build_family(name: str, out_dir: str | Path, spec: TinySpec | None = None) -> Path:
    """Build (or reuse) the tiny model of family `name` at `out_dir`; returns the directory."""
    import transformers

    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    family, spec = FAMILIES[name], spec or TinySpec()
    out, stamp = Path(out_dir), {"family": name, **asdict(spec)}
    if is_built(out, stamp):
        return out
    log.info("building the tiny %s in %s", name, out)
    named = {"bos_token": family.bos} if family.bos else {}
    tokenizer = train_tokenizer(training_texts(spec), spec.vocab_size, family.special_tokens, family.chat_template,
                                eos=family.eos, pad=family.pad, **named)
    processor = family.processor(tokenizer, spec, family.chat_template)
    config = family.config(tokenizer, spec)
    return write_model_dir(out, getattr(transformers, family.model_class), config, processor, stamp, spec.seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build one model family's tiny fixture offline.")
    parser.add_argument("--family", choices=sorted(FAMILIES), required=True)
    parser.add_argument("--out", required=True, help="model directory to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    log.info("%s ready at %s", args.family, build_family(args.family, args.out, TinySpec(seed=args.seed)))


if __name__ == "__main__":
    main()
