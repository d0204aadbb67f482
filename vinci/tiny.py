"""The embedded default: a tiny Qwen2-VL built offline, saved as an ordinary model directory.

Nothing here downloads. The tokenizer is a byte-level BPE trained on the synthetic corpus's
programs and prompts, the model is `Qwen2VLForConditionalGeneration` built from its config
classes with seeded random weights, and both are written with `save_pretrained`. Training then
loads the directory through `vinci.backbone.load_backbone`, exactly the path a hub model takes.
The same tools build every other family's tiny fixture (`vinci.families`).

What it simplifies: the architecture is the real one, only every size is shrunk (2 vision
blocks, a few decoder layers, a 2k vocabulary), so it learns the synthetic corpus's templates
but nothing like real-world code. Its chat template is ChatML without Qwen2-VL's default system
prompt (the `qwen2_vl` family in `vinci.families` has the released one).

    python -m vinci.tiny --out artifacts/tiny-vlm
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from vinci.leftovers import remove_dead

log = logging.getLogger(__name__)

# Qwen2-VL's special tokens; the processor and the model config refer to them by name.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# A ChatML template written for this model: the image sits where the content list puts it.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
STAMP = "vinci_tiny.json"  # what was built, written last: a directory without it is an unfinished build


@dataclass
class TinySpec:
    """Sizes of the embedded model. The defaults give about 3M parameters."""

    seed: int = 0  # seeds the weights and the tokenizer's training text
    vocab_size: int = 2048  # BPE vocabulary trained on the synthetic corpus
    hidden_size: int = 192  # decoder width (also the vision merger's output width)
    layers: int = 4  # decoder layers
    heads: int = 6  # attention heads (head_dim = hidden_size / heads = 32)
    kv_heads: int = 2  # grouped-query attention
    intermediate_size: int = 512  # decoder MLP width
    vision_dim: int = 64  # vision tower width
    vision_depth: int = 2  # vision blocks
    texts_per_language: int = 400  # synthetic programs per language for the tokenizer
    min_pixels: int = 56 * 56  # image processor's pixel range: 4..64 image tokens after merging
    max_pixels: int = 224 * 224


def training_texts(spec: TinySpec) -> list[str]:
    """Programs, flawed programs and prompts from the synthetic corpus (no rendering)."""
    from vinci.data import synth
    from vinci.tasks import TASKS, fence

    texts = []
    for language, task in TASKS.items():
        for program in synth.generate(language, spec.texts_per_language, seed=spec.seed):
            texts.append(fence(program.code, language))
            texts.append(task.refine_prompt.format(code=program.flawed_code))
        texts.append(task.direct_prompt)
    return texts


def train_tokenizer(texts: list[str], vocab_size: int, special_tokens, chat_template: str, eos: str, pad: str, **named):
    """A byte-level BPE trained on `texts`; `special_tokens` get the first ids, in order.

    `named` are further special-token roles, e.g. bos_token="<|im_start|>".
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte stays encodable
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=eos,
        pad_token=pad,
        chat_template=chat_template,
        padding_side="left",
        **named,
    )


def mrope_sections(head_dim: int) -> list[int]:
    """M-RoPE's (time, height, width) split of a head's rotary frequencies, Qwen's 1 : 1.5 : 1.5."""
    half = head_dim // 2
    time = half // 4
    height = (half - time) // 2
    return [time, height, half - time - height]


def decoder_sizes(tokenizer, spec: TinySpec) -> dict:
    """The decoder's sizes as every family's text config names them."""
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=4096,
    )


def qwen2_vl_config(tokenizer, spec: TinySpec):
    from transformers import Qwen2VLConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    return Qwen2VLConfig(
        text_config=dict(
            **decoder_sizes(tokenizer, spec),
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": mrope_sections(spec.hidden_size // spec.heads),
            },
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=spec.vision_depth,
            embed_dim=spec.vision_dim,
            hidden_size=spec.hidden_size,
            num_heads=2,
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def qwen2_vl_processor(tokenizer, spec: TinySpec, chat_template: str, processor_class=None):
    """Qwen2-VL's processor (or another class taking the same parts, e.g. Qwen2.5-VL's)."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    return (processor_class or Qwen2VLProcessor)(
        image_processor=Qwen2VLImageProcessor(min_pixels=spec.min_pixels, max_pixels=spec.max_pixels),
        video_processor=Qwen2VLVideoProcessor(),
        tokenizer=tokenizer,
        chat_template=chat_template,
    )


def is_built(out: Path, stamp: dict) -> bool:
    path = out / STAMP
    return path.is_file() and json.loads(path.read_text()) == stamp


def write_model_dir(out: Path, model_class, config, processor, stamp: dict, seed: int) -> Path:
    """Build `model_class(config)` with seeded weights and save it, its processor and a generation
    config as an ordinary model directory; the stamp is written last."""
    import torch
    from transformers import GenerationConfig

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = model_class(config)
    torch.random.set_rng_state(generator_state)  # building must not disturb the caller's seed
    text = config.get_text_config()
    model.generation_config = GenerationConfig(
        eos_token_id=text.eos_token_id,
        pad_token_id=text.pad_token_id,
        bos_token_id=text.bos_token_id,
    )
    # Written under a temporary name beside `out` and renamed into place, so a killed build
    # leaves no half-written model, and two processes building at once never read one.
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_dead(out.parent.glob(f".{out.name}.*-*"))  # what killed builds left beside it
    staged = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staged, ignore_errors=True)
    model.save_pretrained(staged)
    processor.save_pretrained(staged)
    (staged / STAMP).write_text(json.dumps(stamp, indent=2))  # last: marks the build complete
    if is_built(out, stamp):  # another process finished the same build first
        shutil.rmtree(staged, ignore_errors=True)
        return out
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
        os.rename(staged, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        try:
            os.rename(staged, out)
        except OSError:  # another process renamed its build in between
            shutil.rmtree(staged, ignore_errors=True)
            if not is_built(out, stamp):
                raise
    return out


def build_tiny_vlm(out_dir: str | Path, spec: TinySpec | None = None, texts: list[str] | None = None) -> Path:
    """Build (or reuse) the tiny VLM at `out_dir`; returns the directory.

    A directory already holding a model built from the same spec is reused as it is.
    """
    from transformers import Qwen2VLForConditionalGeneration

    spec = spec or TinySpec()
    out = Path(out_dir)
    if texts is None and is_built(out, asdict(spec)):
        return out
    log.info("building the embedded tiny VLM in %s", out)
    tokenizer = train_tokenizer(
        texts if texts is not None else training_texts(spec), spec.vocab_size, SPECIAL_TOKENS, CHAT_TEMPLATE,
        eos="<|im_end|>", pad="<|endoftext|>",
    )
    processor = qwen2_vl_processor(tokenizer, spec, CHAT_TEMPLATE)
    config = qwen2_vl_config(tokenizer, spec)
    return write_model_dir(out, Qwen2VLForConditionalGeneration, config, processor, asdict(spec), spec.seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the embedded tiny VLM offline.")
    parser.add_argument("--out", default="artifacts/tiny-vlm", help="model directory to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    path = build_tiny_vlm(args.out, TinySpec(seed=args.seed))
    log.info("tiny VLM ready at %s", path)


if __name__ == "__main__":
    main()
