"""The models and recipe settings benchmarks.memory measures, and how each is built without weights.

`ARCHS`: the released configuration of each Qwen2.5-VL / Qwen3-VL size; `build_model_dir` saves
one with random bf16 weights (at any depth) beside its family fixture's processor, so the real
loading path can run on it (benchmarks.memory, benchmarks.gpu_check). `RECIPES`: the settings
of configs/recipes/*.yaml that memory depends on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from PIL import Image, ImageDraw
from transformers import AutoConfig, AutoProcessor, GenerationConfig

from vinci.families import FAMILIES, build_family
from vinci.tiny import TinySpec

# ---- released configurations ---------------------------------------------------------------
# Values as in the config.json of each Qwen/<name>-Instruct repository on huggingface.co, read
# there or from unmodified copies in derived repositories (Qwen/Qwen2.5-VL-7B-Instruct-AWQ,
# unsloth/Qwen2.5-VL-7B-Instruct, fine-tunes of Qwen3-VL-4B/8B-Instruct that keep its config).
# Where Qwen2.5-VL's config.json leaves a vision value to the class default (depth, intermediate
# size, heads, window, full-attention blocks), transformers' Qwen2_5_VLVisionConfig default is what
# the release runs with; Qwen3VLVisionConfig's defaults are the 8B's vision tower. Facts used:
# - Qwen2.5-VL-3B: hidden 2048, intermediate 11008, 36 layers, 16 heads, 2 KV heads, vocab
#   151,936, tied embeddings, rope theta 1e6, mrope [16, 24, 24]; vision out_hidden_size 2048.
# - Qwen2.5-VL-7B: hidden 3584, intermediate 18944, 28 layers, 28 heads, 4 KV heads, vocab
#   152,064 (not 151,936), untied; vision out_hidden_size 3584.
# - Qwen2.5-VL vision (both): depth 32, hidden 1280, intermediate 3420, 16 heads, patch 14,
#   spatial merge 2 (28 px per token), temporal patch 2, window 112 px, full attention in blocks
#   7, 15, 23, 31, SiLU.
# - Qwen3-VL-2B: text as Qwen3-1.7B: hidden 2048, intermediate 6144, 28 layers, 16 heads, 8 KV
#   heads, head_dim 128, tied; vision depth 24, hidden 1024, intermediate 4096, out 2048.
# - Qwen3-VL-4B: text as Qwen3-4B: hidden 2560, intermediate 9728, 36 layers, 32 heads, 8 KV
#   heads, head_dim 128, tied; vision depth 24, hidden 1024, intermediate 4096, out 2560.
# - Qwen3-VL-2B and 4B: deepstack features from vision blocks 5, 11, 17.
# - Qwen3-VL-8B: hidden 4096, intermediate 12288, 36 layers, 32 heads, 8 KV heads, head_dim 128,
#   untied; vision depth 27, hidden 1152, intermediate 4304, out 4096, deepstack 8, 16, 24.
# - Qwen3-VL (all): vocab 151,936, rope theta 5e6, interleaved mrope [24, 20, 20]; vision patch
#   16 (32 px per token), 16 heads, 2,304 learned position embeddings, gelu_pytorch_tanh.
# Token ids (image, video, vision start/end, EOS, pad) are the fixture tokenizer's, not 151,6xx.


@dataclass(frozen=True)
class Arch:
    family: str  # vinci.families name: its processor, tokenizer and chat template are reused
    text: dict  # text_config values
    vision: dict  # vision_config values
    tied: bool  # tie_word_embeddings

    @property
    def layers(self) -> int:
        return self.text["num_hidden_layers"]

    @property
    def vision_depth(self) -> int:
        return self.vision["depth"]

    def lora_params(self, layers: int, rank: int = 16) -> int:
        """LoRA parameters on every linear layer of `layers` decoder layers (target_modules
        all-linear; the vision tower frozen): rank x (in + out) per matrix."""
        t = self.text
        hidden, inter = t["hidden_size"], t["intermediate_size"]
        head_dim = t.get("head_dim", hidden // t["num_attention_heads"])
        q, kv = t["num_attention_heads"] * head_dim, t["num_key_value_heads"] * head_dim
        shapes = [(hidden, q), (hidden, kv), (hidden, kv), (q, hidden), (hidden, inter), (hidden, inter), (inter, hidden)]
        return layers * rank * sum(i + o for i, o in shapes)

    @property
    def token_px(self) -> int:
        """Pixels per side of one image token after the 2x2 merge: 28 (Qwen2.5-VL) or 32 (Qwen3-VL)."""
        return self.vision["patch_size"] * self.vision["spatial_merge_size"]


QWEN25_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14,
                     spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                     fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2, hidden_act="silu")
QWEN25_ROPE = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}
QWEN3_VISION = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, patch_size=16,
                    spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                    deepstack_visual_indexes=[5, 11, 17], hidden_act="gelu_pytorch_tanh")
QWEN3_ROPE = {"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20], "mrope_interleaved": True}


def text_config(hidden, intermediate, layers, heads, kv_heads, vocab=151936, rope=QWEN25_ROPE, **extra) -> dict:
    return dict(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab,
                rms_norm_eps=1e-6, max_position_embeddings=128000, rope_parameters=rope, **extra)


ARCHS: dict[str, Arch] = {
    "qwen2.5-vl-3b": Arch("qwen2_5_vl", text_config(2048, 11008, 36, 16, 2),
                          dict(QWEN25_VISION, out_hidden_size=2048), tied=True),
    "qwen2.5-vl-7b": Arch("qwen2_5_vl", text_config(3584, 18944, 28, 28, 4, vocab=152064),
                          dict(QWEN25_VISION, out_hidden_size=3584), tied=False),
    "qwen3-vl-2b": Arch("qwen3_vl", text_config(2048, 6144, 28, 16, 8, rope=QWEN3_ROPE, head_dim=128),
                        dict(QWEN3_VISION, out_hidden_size=2048), tied=True),
    "qwen3-vl-4b": Arch("qwen3_vl", text_config(2560, 9728, 36, 32, 8, rope=QWEN3_ROPE, head_dim=128),
                        dict(QWEN3_VISION, out_hidden_size=2560), tied=True),
    "qwen3-vl-8b": Arch("qwen3_vl", text_config(4096, 12288, 36, 32, 8, rope=QWEN3_ROPE, head_dim=128),
                        dict(QWEN3_VISION, depth=27, hidden_size=1152, intermediate_size=4304,
                             out_hidden_size=4096, deepstack_visual_indexes=[8, 16, 24]), tied=False),
}

# ---- recipe settings -----------------------------------------------------------------------
# configs/recipes/*-qlora-virl.yaml: B prompts x G = 8 sampled together (B = data.batch_size: 4
# for the 3B, 2 for the 7B, 2B and 4B, 1 for the 8B), 2,048 new tokens, update micro-batch 4 (2B,
# 3B, 4B) or 2 (7B, 8B), AdamW lr 1e-6, wd 0.01. Each is also shown at half its micro-batch, so that
# what fits is visible where the recipe's does not; sampling is also shown per chunk of P = 1, 2, 4
# prompts (CHUNKS), as a rollout batch sampled a chunk at a time holds one chunk's KV cache.
# configs/recipes/*-qlora-sft.yaml: rows x up to 4,096 tokens (max_length), 2 rows (2B, 3B, 4B) or
# 1 (7B, 8B), AdamW lr 1e-4; measured as QLoRA (the recipes) and as LoRA on a bf16 base.
# configs/recipes/*-eval.yaml: the NF4 base, as training loads it, + the adapter, data.batch_size 8 prompts
# answered once each (greedy) up to 2,048 tokens, DINOv2-L scoring the renders.
IMAGE_TOKENS = 1000  # a chart at 40 x 25 tokens; see the prompt note printed with the table
PROMPT = "<image>Write the matplotlib python code that draws this chart."
CHUNKS = (1, 2, 4)  # prompts per generate call (sampler.prompts_per_generation) to report


@dataclass(frozen=True)
class Recipe:
    """The settings of one model's recipes that its memory depends on."""

    prompts: int = 4  # B, prompts sampled together (B x G rows in one generate call)
    group: int = 8  # G
    new_tokens: int = 2048  # max_new_tokens
    micro_batch: tuple[int, ...] = (4, 2)  # update rows: the recipe's, then the fallback
    sft_rows: int = 2
    sft_tokens: int = 4096  # prompt + answer
    eval_rows: int = 8  # eval recipe: prompts per generate call, one greedy answer each


RECIPES = {
    "qwen2.5-vl-3b": Recipe(prompts=4, micro_batch=(4, 2)),
    "qwen2.5-vl-7b": Recipe(prompts=2, micro_batch=(2, 1), sft_rows=1),
    "qwen3-vl-2b": Recipe(prompts=2, micro_batch=(4, 2)),
    "qwen3-vl-4b": Recipe(prompts=2, micro_batch=(4, 2)),
    "qwen3-vl-8b": Recipe(prompts=1, micro_batch=(2, 1), sft_rows=1),
}
REWARD_MODEL = "vit_large_patch14_dinov2.lvd142m"  # DINOv2-L: 24 blocks
REWARD_DEPTH = 24


def build_model_dir(arch: Arch, layers: int, vision_depth: int, out: Path, image_tokens: int = IMAGE_TOKENS) -> Path:
    """`arch` at `layers` decoder layers and `vision_depth` vision blocks with random bf16 weights,
    saved with the family fixture's processor, whose pixel limit admits `image_tokens` tokens."""
    folder = out / f"{arch.family}-h{arch.text['hidden_size']}-L{layers}-V{vision_depth}-t{image_tokens}"
    if (folder / "built.json").is_file():
        return folder
    unit = arch.token_px
    fixture = build_family(arch.family, out / f"fixture-{arch.family}-t{image_tokens}",
                           TinySpec(texts_per_language=60, min_pixels=4 * unit * unit, max_pixels=image_tokens * unit * unit))
    processor = AutoProcessor.from_pretrained(fixture)
    tiny = AutoConfig.from_pretrained(fixture)
    vision = dict(arch.vision, depth=vision_depth)
    if "fullatt_block_indexes" in vision:  # keep the released blocks that exist, else the last one
        vision["fullatt_block_indexes"] = [i for i in vision["fullatt_block_indexes"] if i < vision_depth] or [vision_depth - 1]
    if "deepstack_visual_indexes" in vision and max(vision["deepstack_visual_indexes"]) >= vision_depth:
        # as many deepstack features as released (one merger each), from the first blocks
        vision["deepstack_visual_indexes"] = list(range(len(vision["deepstack_visual_indexes"])))
    ids = tiny.get_text_config()
    text = dict(arch.text, num_hidden_layers=layers, bos_token_id=ids.bos_token_id,
                eos_token_id=ids.eos_token_id, pad_token_id=ids.pad_token_id)
    markers = {k: getattr(tiny, k) for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")}
    config = type(tiny)(text_config=text, vision_config=vision, tie_word_embeddings=arch.tied, **markers)
    torch.manual_seed(0)
    model = getattr(transformers, FAMILIES[arch.family].model_class)._from_config(config, dtype=torch.bfloat16)
    model.generation_config = GenerationConfig(eos_token_id=ids.eos_token_id, pad_token_id=ids.pad_token_id)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "built.json").write_text(json.dumps({"layers": layers, "vision_depth": vision_depth}))
    return folder


def chart_image(token_px: int, width: int = 40, height: int = 25):
    """A bar chart of exactly width x height image tokens (40 x 25 = 1,000 by default)."""
    image = Image.new("RGB", (width * token_px, height * token_px), "white")
    draw = ImageDraw.Draw(image)
    w, h = image.size
    for i in range(12):
        x = w // 10 + i * (w * 8 // 10) // 12
        draw.rectangle([x, h - h // 10 - (i % 7 + 1) * h // 10, x + w // 30, h - h // 10], fill=(40 + 17 * i, 90, 200 - 12 * i))
    draw.line([w // 20, h // 20, w // 20, h - h // 10, w - w // 40, h - h // 10], fill="black", width=3)
    return image



@dataclass
class Plan:
    """What to measure; the defaults are what a CPU can do in minutes per model."""

    layers: tuple[int, ...] = (2, 3)  # decoder layers built; () = full depth (not 1: its input is the embedding)
    rows: tuple[int, int] = (1, 2)  # update/SFT rows measured
    tokens: tuple[int, int] = (64, 320)  # update/SFT completion (answer) tokens measured
    sample_tokens: tuple[int, ...] = (32, 16)  # sampling new tokens, per measured depth
    vision_blocks: dict | None = None  # family -> vision blocks built; None = full depth
    reward_depth: int = 1  # DINOv2-L blocks built

