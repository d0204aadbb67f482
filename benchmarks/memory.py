"""Peak memory per phase of each recipe, for real-size Qwen2.5-VL and Qwen3-VL built without weights.

    python -m benchmarks.memory                                   # every model, on the CPU: projected
    python -m benchmarks.memory --models qwen2.5-vl-3b qwen3-vl-8b
    python -m benchmarks.memory --layers full --rows 2,4 --tokens 1024,2048 --sample-tokens 2048   # GPU: measured

Each model is built from its released configuration (`ARCHS`) with random weights, saved with
`save_pretrained` and loaded through `vinci.backbone.load_backbone`, so the real loading path
(NF4 quantisation, peft's fp32 upcasts for k-bit training, LoRA r=16 on every language linear
layer, gradient checkpointing) is what is measured. The phases run vinci's own code:

- sampling: `vinci.generation.sample`, G rows of one prompt, EOS unsampleable until
  max_new_tokens (`min_new_tokens`): every row is as long as a random policy makes it;
- update: one ViRL micro-batch as `ViRLModule.update` runs it: `vinci.logprobs.sequence_logp`
  with the entropy, `vinci.grpo.policy_loss`, backward, gradient clipping, AdamW step, under bf16
  autocast as Lightning's `bf16-mixed` runs the training step (sampling runs outside it);
- SFT: one micro-batch of `vinci.logprobs.answer_loss`, backward, clipping, AdamW step;
- reward: `vinci.reward.similarity.patch_similarity` of G renders against their reference with
  DINOv2-L, 12 tiles + thumbnail of 448 px per image.

The LoRA gradients and AdamW state exist in every phase, as from the second step on. Memory is
`torch.cuda.max_memory_allocated` on a GPU and the peak of live tensor bytes on the CPU
(`vinci.tensor_memory.LiveTensorBytes`: what a tensor allocator must hold, not RSS).

A CPU cannot run 36 layers over 32 x 3,000 tokens, so by default each model is measured with 2
and 3 decoder layers, at 1 and 2 rows and two short lengths, and projected linearly, each segment
of a phase (vision tower, decoder layers, output head; forward, backward, optimizer step) on its
own, the largest giving the phase's peak:

    per decoder layer    from the two depths (weights, KV cache, checkpointed layer inputs)
    per vision block     by its measured weight bytes (a frozen block keeps no activations)
    per token            sampling: a line through the peaks of the decode steps of one run;
                         update/SFT: from the two lengths, the per-layer part in proportion to
                         prompt + completion (a checkpoint is [rows, tokens, hidden])
    per row              sampling: every tensor is per row, so G measured rows scale to B x G;
                         update/SFT: from 1 and 2 rows, whose difference is one row's share

Every figure says whether it was measured or projected. On Qwen2.5-VL-3B the projections matched
direct measurements at 5 layers, 4 rows and 1,024 tokens to within 2 MiB. Limits: DINOv2-L
computes in fp32 on the CPU (vinci's TimmEncoder autocasts to bf16 on CUDA only), which
overstates its activations; CPU and CUDA kernels differ (their scratch memory, which is not seen,
and autocast's op lists); the budgets keep `--headroom` GiB free for the CUDA context, cuBLAS
workspace and allocator fragmentation.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import timm
import torch
import transformers
from PIL import Image, ImageDraw, ImageFilter
from safetensors.torch import save_file
from transformers import AutoConfig, AutoProcessor, GenerationConfig

from vinci import grpo
from vinci.backbone import Backbone, Quantization, default_device, load_backbone
from vinci.data.collate import IGNORE, prompt_text
from vinci.families import FAMILIES, build_family
from vinci.generation import sample
from vinci.inputs import rows_of, with_completion
from vinci.logprobs import DEFAULT_CHUNK, answer_loss, sequence_logp
from vinci.reward.encoders import TimmEncoder
from vinci.reward.similarity import patch_similarity
from vinci.tensor_memory import LiveTensorBytes
from vinci.tiny import TinySpec

log = logging.getLogger("benchmarks.memory")
ROOT = Path(__file__).resolve().parents[1]
GiB = 2**30

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
# configs/recipes/*-qlora-virl.yaml: 4 prompts x G = 8 sampled together, 2,048 new tokens, update
# micro-batch 4 (2B, 3B, 4B) or 2 (7B, 8B), AdamW lr 1e-6, wd 0.01. Each is also shown at half its
# micro-batch, so that what fits is visible where the recipe's does not.
# configs/recipes/*-qlora-sft.yaml: rows x up to 4,096 tokens (max_length), 2 rows (2B, 3B, 4B) or
# 1 (7B, 8B), AdamW lr 1e-4; measured as QLoRA (the recipes) and as LoRA on a bf16 base.
IMAGE_TOKENS = 1000  # a chart at 40 x 25 tokens; see the prompt note printed with the table
PROMPT = "<image>Write the matplotlib python code that draws this chart."


@dataclass(frozen=True)
class Recipe:
    """The settings of one model's recipes that its memory depends on."""

    prompts: int = 4  # B, prompts sampled together (B x G rows in one generate call)
    group: int = 8  # G
    new_tokens: int = 2048  # max_new_tokens
    micro_batch: tuple[int, ...] = (4, 2)  # update rows: the recipe's, then the fallback
    sft_rows: int = 2
    sft_tokens: int = 4096  # prompt + answer


RECIPES = {
    "qwen2.5-vl-3b": Recipe(micro_batch=(4, 2)),
    "qwen2.5-vl-7b": Recipe(micro_batch=(2, 1), sft_rows=1),
    "qwen3-vl-2b": Recipe(micro_batch=(4, 2)),
    "qwen3-vl-4b": Recipe(micro_batch=(4, 2)),
    "qwen3-vl-8b": Recipe(micro_batch=(2, 1), sft_rows=1),
}
REWARD_MODEL = "vit_large_patch14_dinov2.lvd142m"  # DINOv2-L: 24 blocks
REWARD_DEPTH = 24
BUDGETS_GIB = (16, 24)


# ---- measuring ------------------------------------------------------------------------------
class Meter:
    """Peak bytes since the last `reset`: CUDA's allocator counters, or live tensor bytes on the CPU."""

    def __init__(self) -> None:
        self.cuda = torch.cuda.is_available()
        self.method = "torch.cuda.max_memory_allocated" if self.cuda else "peak live tensor bytes (LiveTensorBytes)"
        self._tracker = None

    @contextmanager
    def active(self):
        if self.cuda:
            yield self
            return

        with LiveTensorBytes() as self._tracker:
            yield self
        self._tracker = None

    def current(self) -> int:
        return torch.cuda.memory_allocated() if self.cuda else self._tracker.current

    def peak(self) -> int:
        return torch.cuda.max_memory_allocated() if self.cuda else self._tracker.peak

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._tracker.reset_peak()


def module_bytes(module) -> int:
    """Bytes of a module's parameters, buffers and bitsandbytes quantisation constants."""
    seen: set[int] = set()

    def size(tensor) -> int:
        if not isinstance(tensor, torch.Tensor) or id(tensor.untyped_storage()) in seen:
            return 0
        seen.add(id(tensor.untyped_storage()))
        return tensor.untyped_storage().nbytes()

    total = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        total += size(tensor)
        state = getattr(tensor, "quant_state", None)
        while state is not None:  # absmax, code, offset; state2 under double quantisation
            total += sum(size(value) for value in vars(state).values())
            state = getattr(state, "state2", None)
    return total


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


def prompt_inputs(processor, image) -> dict:
    """One templated prompt with its image, as vinci.data.collate.RLCollator builds a batch of them."""
    processor.tokenizer.padding_side = "left"
    return dict(processor(text=[prompt_text(processor, PROMPT)], images=[image], padding=True, return_tensors="pt"))


def random_ids(model, rows: int, length: int, low: int):
    """[rows, length] token ids at or above `low`, the fixture tokenizer's size: never a special token."""
    vocab = model.get_output_embeddings().weight.shape[0]
    return torch.randint(low, vocab, (rows, length))


def warm_optimizer(model, lr: float, weight_decay: float):
    """AdamW over the trainable (LoRA) tensors, stepped once so that its state and the grads exist."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)
    for p in trainable:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    return optimizer, trainable


class Segments:
    """Peak bytes per segment of a run, so that each kind of moment is projected on its own.

    A segment is "<stage> <part>": the caller sets the stage (forward, backward, step, prefill),
    and the part changes when a watched module starts its forward: the vision tower, a decoder
    layer, the output head (checkpointed layers and head chunks run their forward again in the
    backward, so the backward splits the same way). A phase's peak is its largest segment's.
    """

    def __init__(self, meter: Meter, model) -> None:
        base = model.get_base_model()
        # a layer's first module, not the layer: checkpointing reruns a layer's forward without its hooks
        first = [getattr(layer, "input_layernorm", None) or next(layer.children()) for layer in base.model.language_model.layers]
        parts = {"vision": [base.model.visual], "layers": first, "head": [base.get_output_embeddings()]}
        self.meter, self.stage, self.part, self.split, self.peaks = meter, "", "", True, {}
        self.hooks = [module.register_forward_pre_hook(lambda *_, part=part: self.switch(part=part))
                      for part, modules in parts.items() for module in modules]

    def switch(self, stage: str | None = None, part: str | None = None) -> None:
        if part is not None and not self.split:
            return
        key = f"{self.stage} {self.part}".strip()
        if key:
            self.peaks[key] = max(self.peaks.get(key, 0), self.meter.peak())
        self.meter.reset()
        if stage is not None:
            self.stage, self.part = stage, ""
        if part is not None:
            self.part = part

    def close(self) -> dict[str, int]:
        self.switch(stage="")
        for hook in self.hooks:
            hook.remove()
        return self.peaks


def measure_sampling(meter: Meter, model, processor, inputs: dict, group: int, new_tokens: int) -> dict:
    """Peaks of `sample` for G rows of one prompt, each new_tokens long: per segment of the prefill
    (the first forward), then one per decode step (forwards 1 .. N-1), then what follows them."""
    base = model.get_base_model()
    segments, steps = Segments(meter, model), []

    def record(module, args, output):
        if segments.stage == "prefill":
            segments.switch(stage="decode")
            segments.split = False  # one peak per decode step
        else:
            steps.append(meter.peak())
            meter.reset()

    hook = base.register_forward_hook(record)
    base.generation_config.min_new_tokens = new_tokens  # EOS is masked until max_new_tokens
    baseline = meter.current()
    try:
        segments.switch(stage="prefill")
        done = sample(model, processor, inputs, num_samples=group, max_new_tokens=new_tokens)
        steps.append(meter.peak())
    finally:
        hook.remove()
        prefill = segments.close()
    if int(done.completion_mask.sum(dim=1).min()) != new_tokens:
        raise RuntimeError("a sample ended before max_new_tokens: the worst case was not measured")
    prefill.pop("decode", None)
    return {"baseline": baseline, "rows": group, "new_tokens": new_tokens, "prefill": prefill, "steps": steps}


def measure_step(meter: Meter, model, optimizer, trainable, make_batch, loss_fn) -> dict:
    """Segment peaks of one micro-batch: zero_grad, build the batch (its inputs count), the loss
    under bf16 autocast as Lightning's bf16-mixed runs it, backward, clipping, AdamW step."""
    optimizer.zero_grad()
    baseline = meter.current()
    segments = Segments(meter, model)
    segments.switch(stage="forward")
    batch = make_batch()
    with torch.autocast("cuda" if meter.cuda else "cpu", dtype=torch.bfloat16):
        loss = loss_fn(batch)
    segments.switch(stage="backward")
    loss.backward()
    segments.switch(stage="step")
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    optimizer.step()
    del batch, loss
    return {"baseline": baseline, "segments": segments.close()}


def measure_update(meter: Meter, model, optimizer, trainable, inputs: dict, rows: int, new_tokens: int, low: int) -> dict:
    """One ViRL micro-batch of `rows` sequences with new_tokens completion tokens each."""
    def make_batch():
        ids = random_ids(model, rows, new_tokens, low).to(inputs["input_ids"].device)  # [n, L]
        mask = torch.ones_like(ids)  # [n, L]: no sample stopped early
        advantages = torch.randn(rows, device=ids.device)  # [n]
        return with_completion(rows_of(inputs, [0] * rows), ids, mask), ids, mask, advantages  # inputs [n, P + L]

    def loss(batch):
        model_inputs, ids, mask, advantages = batch
        logp, entropy = sequence_logp(model, model_inputs, ids, mask, 1.0, DEFAULT_CHUNK, with_entropy=True)  # [n, L]
        value, _ = grpo.policy_loss(logp, logp.detach(), advantages, mask, clip_low=0.2, clip_high=0.3,
                                    clip_dual=3.0, agg="token-mean", entropy=entropy.detach())
        return value

    return dict(measure_step(meter, model, optimizer, trainable, make_batch, loss), rows=rows, new_tokens=new_tokens)


def measure_sft(meter: Meter, model, optimizer, trainable, inputs: dict, rows: int, new_tokens: int, low: int) -> dict:
    """One SFT micro-batch of `rows` sequences: the prompt, then new_tokens answer tokens."""
    def make_batch():
        ids = random_ids(model, rows, new_tokens, low).to(inputs["input_ids"].device)  # [n, A]
        model_inputs = with_completion(rows_of(inputs, [0] * rows), ids, torch.ones_like(ids))  # [n, P + A]
        labels = model_inputs["input_ids"].clone()  # [n, P + A]
        labels[:, :-new_tokens] = IGNORE  # the prompt and its image tokens do not count
        return model_inputs, labels

    def loss(batch):
        return answer_loss(model, batch[0], batch[1], IGNORE, DEFAULT_CHUNK)[0]

    return dict(measure_step(meter, model, optimizer, trainable, make_batch, loss), rows=rows, new_tokens=new_tokens)


def reward_images(group: int):
    """A 4:3 reference chart (a 4 x 3 grid: 12 tiles + thumbnail) and G distinct near-miss renders."""
    reference = chart_image(32, 40, 30)  # 1280 x 960
    renders = [reference.rotate(2 * (i + 1), fillcolor="white").filter(ImageFilter.GaussianBlur(i % 3)) for i in range(group)]
    return reference, renders


def measure_reward(meter: Meter, out: Path, depth: int, group: int) -> dict:
    """Peak of scoring G renders against one reference with DINOv2-L cut to `depth` blocks, random
    weights loaded through vinci's TimmEncoder from a local file."""
    weights = out / f"dinov2-large-depth{depth}.safetensors"
    if not weights.is_file():
        net = timm.create_model(REWARD_MODEL, pretrained=False, num_classes=0, depth=depth)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
        del net
    encoder = TimmEncoder(REWARD_MODEL, weights=str(weights), depth=depth)
    if meter.cuda:
        encoder = encoder.cuda()
    reference, renders = reward_images(group)
    with meter.active():
        meter.reset()
        baseline = meter.current()
        patch_similarity(renders, [reference] * group, encoder, tile_size=448, max_tiles=12)
        peak = meter.peak()
    return {"baseline": baseline, "peak": peak, "weights": module_bytes(encoder), "depth": depth,
            "block_bytes": module_bytes(encoder.model.blocks[0]), "renders": group}


def run_policy(task: dict) -> dict:
    """One worker: load one built model (QLoRA or LoRA on bf16) and run the task's measurements."""
    qlora = task["qlora"]
    settings = Backbone(model=task["folder"], dtype="bfloat16", gradient_checkpointing=True,
                        quantization=Quantization(load_in_4bit=qlora))
    model, processor = load_backbone(settings, trainable=True, device=default_device())  # a QLoRA base loads there
    if qlora:  # as ViRLModule.configure_model: only LoRA matrices train
        for n, p in model.named_parameters():
            p.requires_grad = "lora_" in n
    elif torch.cuda.is_available():
        model.cuda()
    model.train()
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in prompt_inputs(processor, chart_image(task["token_px"], *task["image_grid"])).items()}
    low = len(processor.tokenizer)
    meter = Meter()
    optimizer, trainable = warm_optimizer(model, *((1e-6, 0.01) if qlora else (1e-4, 0.0)))
    result = {"prompt_tokens": int(inputs["input_ids"].shape[1]), "method": meter.method,
              "vision_block_bytes": module_bytes(model.get_base_model().model.visual.blocks[0]), "results": []}
    with meter.active():
        for job in task["jobs"]:
            started = time.perf_counter()
            if job["kind"] == "sampling":
                out = measure_sampling(meter, model, processor, inputs, job["rows"], job["new_tokens"])
            else:
                measure = measure_update if job["kind"] == "update" else measure_sft
                out = measure(meter, model, optimizer, trainable, inputs, job["rows"], job["new_tokens"], low)
            out.update(kind=job["kind"], layers=task["layers"], seconds=round(time.perf_counter() - started, 1))
            result["results"].append(out)
            log.info("  measured %s", {k: v for k, v in out.items() if k != "steps"})
    return result


# ---- projecting -----------------------------------------------------------------------------
def linear(x: float, x0: float, y0: float, x1: float | None, y1: float | None) -> float:
    """The line through (x0, y0) and (x1, y1) at x; constant y0 when there is no second point."""
    if x1 is None or x1 == x0:
        return y0
    return y0 + (x - x0) * (y1 - y0) / (x1 - x0)


def line_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of ys over xs."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0
    return my - slope * mx, slope


@dataclass
class SamplingFit:
    """Sampling memory measured at one or two depths, G rows of one prompt, above the resident bytes:
    each prefill segment linear in depth, and the decode-step peaks a line in the step (per depth)."""

    layers: list[int]  # measured depths
    rows: int  # measured rows (G of one prompt)
    steps: list[int]  # measured new tokens, per depth
    baseline: list[float]  # resident bytes (weights, LoRA, its grads, AdamW state) per depth
    prefill: list[dict[str, float]]  # segment -> bytes above the baseline, per depth
    intercept: list[float]  # decode step k peaks at intercept + slope * k above the baseline, per depth
    slope: list[float]

    @classmethod
    def from_runs(cls, runs: list[dict]) -> "SamplingFit":
        fit = cls([], runs[0]["rows"], [], [], [], [], [])
        for run in sorted(runs, key=lambda r: r["layers"]):
            decode = [peak - run["baseline"] for peak in run["steps"][:-1]]  # steps 1 .. N-1
            skip = max(2, len(decode) // 4)  # the first steps still settle the cache's layout
            intercept, slope = line_fit([float(k) for k in range(1 + skip, 1 + len(decode))], decode[skip:])
            fit.layers.append(run["layers"])
            fit.steps.append(run["new_tokens"])
            fit.baseline.append(run["baseline"])
            fit.prefill.append({key: peak - run["baseline"] for key, peak in run["prefill"].items()})
            fit.intercept.append(intercept)
            fit.slope.append(slope)
        return fit

    def at(self, values: list[float], layers: int) -> float:
        second = (self.layers[1], values[1]) if len(self.layers) > 1 else (None, None)
        return linear(layers, self.layers[0], values[0], *second)

    def parts(self, layers: int, rows: int, new_tokens: int) -> dict[str, float]:
        """Projected bytes above the resident ones, per segment ("decode": the last step)."""
        out = {key: self.at([p[key] for p in self.prefill], layers) for key in self.prefill[0]}
        out["decode"] = self.at(self.intercept, layers) + self.at(self.slope, layers) * (new_tokens - 1)
        return {key: value * rows / self.rows for key, value in out.items()}

    def peak(self, layers: int, rows: int, new_tokens: int) -> float:
        return self.resident(layers) + max(self.parts(layers, rows, new_tokens).values())

    def where(self, layers: int, rows: int, new_tokens: int) -> str:
        parts = self.parts(layers, rows, new_tokens)
        return max(parts, key=parts.get)

    def resident(self, layers: int) -> float:
        return self.at(self.baseline, layers)

    def label(self, layers: int, rows: int, new_tokens: int) -> str:
        return _label(self.layers, layers, [self.rows], rows, self.steps, new_tokens,
                      tokens_note=f"a line through {'+'.join(map(str, self.steps))} decode steps")


@dataclass
class StepFit:
    """Update (or SFT) micro-batch memory above the resident bytes, per segment of the step:

        act(L, n, N) = T0 + n * (r + q (N - N0) + (L - L0) k (P + N) / (P + N0))

    T0: what does not grow with rows (LM-head chunks, optimizer temporaries); r: one row at
    (L0, N0); q: one row's growth per completion token; k: one row's growth per decoder layer,
    its checkpointed input [tokens, hidden], hence in proportion to prompt + completion tokens.
    Four runs determine it: (L0, n0, N0), (L0, n0, N1), (L0, n1, N0), (L1, n0, N0).
    """

    prompt: int  # P
    layers: list[int]
    rows: list[int]
    tokens: list[int]
    baseline: list[float]  # resident bytes at each measured depth
    terms: dict[str, tuple[float, float, float, float]]  # segment -> (T0, r, q, k)

    @classmethod
    def from_runs(cls, runs: list[dict], prompt: int) -> "StepFit":
        L0, n0, N0 = (min(r[key] for r in runs) for key in ("layers", "rows", "new_tokens"))
        (n1,), (N1,), (L1,) = ({r[key] for r in runs if r[key] != low} or {None}
                               for key, low in (("rows", n0), ("new_tokens", N0), ("layers", L0)))
        point = {(r["layers"], r["rows"], r["new_tokens"]): r for r in runs}
        base = {L: point[(L, n0, N0)]["baseline"] for L in sorted({L0, L1} - {None})}

        def act(key, L, n, N):
            run = point[(L, n, N)]
            return run["segments"].get(key, 0) - run["baseline"]

        terms = {}
        for key in point[(L0, n0, N0)]["segments"]:
            a = act(key, L0, n0, N0)
            r = (act(key, L0, n1, N0) - a) / (n1 - n0) if n1 else a / n0  # one row's share
            q = (act(key, L0, n0, N1) - a) / (n0 * (N1 - N0)) if N1 else 0.0
            k = (act(key, L1, n0, N0) - a) / (n0 * (L1 - L0)) if L1 else 0.0
            terms[key] = (a - n0 * r, r, q, k)
        return cls(prompt, list(base), sorted({r["rows"] for r in runs}), sorted({r["new_tokens"] for r in runs}),
                   list(base.values()), terms)

    def parts(self, layers: int, rows: int, new_tokens: int) -> dict[str, float]:
        L0, N0, P = self.layers[0], self.tokens[0], self.prompt
        return {key: T0 + rows * (r + q * (new_tokens - N0) + (layers - L0) * k * (P + new_tokens) / (P + N0))
                for key, (T0, r, q, k) in self.terms.items()}

    def peak(self, layers: int, rows: int, new_tokens: int) -> float:
        second = (self.layers[1], self.baseline[1]) if len(self.layers) > 1 else (None, None)
        return linear(layers, self.layers[0], self.baseline[0], *second) + max(self.parts(layers, rows, new_tokens).values())

    def where(self, layers: int, rows: int, new_tokens: int) -> str:
        parts = self.parts(layers, rows, new_tokens)
        return max(parts, key=parts.get)

    def label(self, layers: int, rows: int, new_tokens: int) -> str:
        return _label(self.layers, layers, self.rows, rows, self.tokens, new_tokens, tokens_note="")


def _label(layers_m, layers, rows_m, rows, tokens_m, tokens, tokens_note: str) -> str:
    """'measured', or 'projected from ...' naming every dimension that was extrapolated."""
    parts = []
    if layers not in layers_m:
        parts.append(f"{'+'.join(map(str, layers_m))} measured layers")
    if rows not in rows_m:
        parts.append(f"{'+'.join(map(str, rows_m))} rows")
    if tokens not in tokens_m:
        parts.append(tokens_note or f"{'+'.join(map(str, tokens_m))} tokens")
    return "projected from " + ", ".join(parts) if parts else "measured"


# ---- running --------------------------------------------------------------------------------
@dataclass
class Plan:
    """What to measure; the defaults are what a CPU can do in minutes per model."""

    layers: tuple[int, ...] = (2, 3)  # decoder layers built; () = full depth (not 1: its input is the embedding)
    rows: tuple[int, int] = (1, 2)  # update/SFT rows measured
    tokens: tuple[int, int] = (64, 320)  # update/SFT completion (answer) tokens measured
    sample_tokens: tuple[int, ...] = (32, 16)  # sampling new tokens, per measured depth
    vision_blocks: dict | None = None  # family -> vision blocks built; None = full depth
    reward_depth: int = 1  # DINOv2-L blocks built


def worker_tasks(name: str, plan: Plan, folder_for) -> list[dict]:
    """The worker processes for one model: (QLoRA: sampling, update, SFT; LoRA-bf16: SFT) x depths.
    The first depth gets StepFit's four-point design, the second only its first point."""
    arch, recipe = ARCHS[name], RECIPES[name]
    depths = plan.layers or (arch.layers,)
    (n0, n1), (N0, N1) = plan.rows, plan.tokens
    tasks = []
    for qlora in (True, False):
        for i, layers in enumerate(depths):
            points = [(n0, N0)] + ([(n0, N1), (n1, N0)] if i == 0 else [])
            kinds = ("update", "sft") if qlora else ("sft",)
            jobs = [{"kind": kind, "rows": n, "new_tokens": N} for kind in kinds for n, N in points]
            if qlora:
                jobs.insert(0, {"kind": "sampling", "rows": recipe.group, "new_tokens": plan.sample_tokens[min(i, len(plan.sample_tokens) - 1)]})
            tasks.append({"model": name, "qlora": qlora, "layers": layers, "folder": str(folder_for(layers)),
                          "token_px": arch.token_px, "image_grid": [40, IMAGE_TOKENS // 40], "jobs": jobs})
    return tasks


def in_worker(kind: str, task: dict, work: Path) -> dict:
    """Run `task` in a fresh process (clean peak, memory returned on exit); its JSON result."""
    spec, result = work / "task.json", work / "result.json"
    spec.write_text(json.dumps(task))
    result.unlink(missing_ok=True)
    quiet = dict(os.environ, TRANSFORMERS_VERBOSITY="error", HF_HUB_DISABLE_PROGRESS_BARS="1", TQDM_DISABLE="1",
                 PYTHONWARNINGS="ignore")
    subprocess.run([sys.executable, "-m", "benchmarks.memory", "--worker", kind, str(spec), str(result)],
                   cwd=ROOT, env=quiet, check=True)
    return json.loads(result.read_text())


def worker_main(kind: str, spec: Path, result: Path) -> None:
    task = json.loads(spec.read_text())
    if kind == "build":
        arch = Arch(**task["arch"])
        out = build_model_dir(arch, task["layers"], task["vision_depth"], Path(task["out"]))
        result.write_text(json.dumps({"folder": str(out)}))
    elif kind == "policy":
        result.write_text(json.dumps(run_policy(task)))
    else:
        result.write_text(json.dumps(measure_reward(Meter(), Path(task["out"]), task["depth"], task["group"])))


def measure_model(name: str, plan: Plan, work: Path) -> dict:
    arch = ARCHS[name]
    vision_depth = arch.vision_depth if plan.vision_blocks is None else plan.vision_blocks[arch.family]
    folders = {}

    def folder_for(layers: int) -> Path:
        if layers not in folders:
            log.info("building %s with %d decoder layers, %d vision blocks", name, layers, vision_depth)
            task = {"arch": asdict(arch), "layers": layers, "vision_depth": vision_depth, "out": str(work)}
            folders[layers] = Path(in_worker("build", task, work)["folder"])
        return folders[layers]

    runs = {"qlora": [], "bf16": []}
    meta = {}
    for task in worker_tasks(name, plan, folder_for):
        log.info("%s %s, %d layers: %s", name, "QLoRA" if task["qlora"] else "LoRA-bf16", task["layers"],
                 ", ".join(f"{j['kind']} {j['rows']}x{j['new_tokens']}" for j in task["jobs"]))
        out = in_worker("policy", task, work)
        key = "qlora" if task["qlora"] else "bf16"
        runs[key] += out["results"]
        meta[key] = {"vision_block_bytes": out["vision_block_bytes"], "prompt_tokens": out["prompt_tokens"],
                     "method": out["method"]}
    for folder in folders.values():
        shutil.rmtree(folder, ignore_errors=True)
    return {"name": name, "vision_depth": vision_depth, "runs": runs, "meta": meta}


# ---- reporting ------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the table."""

    model: str
    recipe: str
    phase: str
    bytes: float
    label: str


def model_rows(measured: dict, reward: dict, headroom: float) -> tuple[list[Row], list[str]]:
    """Table rows of one model, and its lines for the fits summary."""
    name = measured["name"]
    arch, recipe = ARCHS[name], RECIPES[name]
    L, B, G, N = arch.layers, recipe.prompts, recipe.group, recipe.new_tokens
    prompt = measured["meta"]["qlora"]["prompt_tokens"]
    missing_blocks = arch.vision_depth - measured["vision_depth"]
    vision_note = f"; +{missing_blocks} vision blocks by weight" if missing_blocks else ""
    vq = missing_blocks * measured["meta"]["qlora"]["vision_block_bytes"]
    vb = missing_blocks * measured["meta"]["bf16"]["vision_block_bytes"]
    runs = measured["runs"]
    sampling = SamplingFit.from_runs([r for r in runs["qlora"] if r["kind"] == "sampling"])
    update = StepFit.from_runs([r for r in runs["qlora"] if r["kind"] == "update"], prompt)
    sft_qlora = StepFit.from_runs([r for r in runs["qlora"] if r["kind"] == "sft"], prompt)
    sft = StepFit.from_runs(runs["bf16"], prompt)
    reward_peak, reward_weights = reward["peak_full"], reward["weights_full"]

    def total(prompts: int, group: int, new_tokens: int, micro: int) -> float:
        """One ViRL step: the DINOv2-L weights stay on the GPU beside the policy in every phase."""
        return max(sampling.peak(L, prompts * group, new_tokens) + vq + reward_weights,
                   update.peak(L, micro, new_tokens) + vq + reward_weights,
                   sampling.resident(L) + vq + reward_peak)

    virl = f"ViRL QLoRA {B}x{G}x{N:,}"
    rows = [Row(name, virl, f"sampling ({B * G} rows x {prompt:,}+{N:,} tokens)", sampling.peak(L, B * G, N) + vq,
                sampling.label(L, B * G, N) + vision_note + f"; peak in {sampling.where(L, B * G, N)}")]
    for micro in recipe.micro_batch:
        tag = "recipe" if micro == recipe.micro_batch[0] else "fallback"
        rows.append(Row(name, virl, f"update, micro-batch {micro} ({tag})", update.peak(L, micro, N) + vq,
                        update.label(L, micro, N) + vision_note + f"; peak in {update.where(L, micro, N)}"))
    rows.append(Row(name, virl, "reward: DINOv2-L, 8 renders x 13 crops", reward_peak, reward["label"]))
    for micro in recipe.micro_batch:
        rows.append(Row(name, virl, f"step peak, micro-batch {micro}, + DINOv2-L", total(B, G, N, micro),
                        "largest phase above + the other model beside it"))
    answer, n = recipe.sft_tokens - prompt, recipe.sft_rows
    for setting, fit, extra in (("QLoRA", sft_qlora, vq), ("LoRA-bf16", sft, vb)):
        rows.append(Row(name, f"SFT {setting} {n}x{recipe.sft_tokens:,}", f"update ({prompt:,}+{answer:,} tokens)",
                        fit.peak(L, n, answer) + extra,
                        fit.label(L, n, answer) + vision_note + f"; peak in {fit.where(L, n, answer)}"))

    fits = []
    for budget in BUDGETS_GIB:
        usable = (budget - headroom) * GiB
        for micro in recipe.micro_batch:
            cells = [f"{b} x {G} rows: {largest_tokens(lambda n: total(b, G, n, micro), usable):>6}" for b in (1, 2, 4)]
            most = max((g for g in range(1, 129) if total(1, g, N, micro) <= usable), default=0)
            fits.append(f"{name:<14} {budget:>3} GB  micro-batch {micro}  " + "  ".join(cells)
                        + f"  | at {N:,} tokens: {most}{'+' if most == 128 else ''} rows")
    return rows, fits


def largest_tokens(total, usable: float, limit: int = 65536) -> str:
    """The largest max_new_tokens with total(n) <= usable (total grows with n), as text."""
    if total(1) > usable:
        return "none"
    lo, hi = 1, limit
    if total(hi) <= usable:
        return f">{limit:,}"
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if total(mid) <= usable else (lo, mid)
    return f"{lo:,}"


def reward_summary(reward: dict) -> dict:
    missing = REWARD_DEPTH - reward["depth"]
    reward["peak_full"] = reward["peak"] + missing * reward["block_bytes"]
    reward["weights_full"] = reward["weights"] + missing * reward["block_bytes"]
    reward["label"] = f"projected from {reward['depth']} measured block(s), +{missing} by weight" if missing else "measured"
    return reward


def measured_lines(measured: dict) -> list[str]:
    """One line per measured run of a model: what was built and run, and what it peaked at."""
    lines = []
    for setting, runs in measured["runs"].items():
        for run in runs:
            segments = run.get("segments") or {**run["prefill"], "decode steps": max(run["steps"])}
            where = max(segments, key=segments.get)
            lines.append(f"  {measured['name']:<14} {'QLoRA' if setting == 'qlora' else 'LoRA-bf16':<9} {run['layers']} layers, "
                         f"{measured['vision_depth']} vision blocks  {run['kind']:<8} {run['rows']} x {run['new_tokens']:<4} new  "
                         f"resident {run['baseline'] / GiB:5.2f}  peak {segments[where] / GiB:5.2f} GiB in {where:<15} "
                         f"{run['seconds']:6.1f} s")
    return lines


def report(data: dict, headroom: float) -> None:
    """Print the table, the fits and the measured points behind them."""
    plan = Plan(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.get("plan", {}).items()})
    reward, measured = data["reward"], data["models"]
    rows, fits = [], []
    for m in measured:
        model_table, model_fits = model_rows(m, reward, headroom)
        rows += model_table
        fits += model_fits
    widths = [max(len(getattr(r, f)) for r in rows) for f in ("model", "recipe", "phase")]
    print(" | ".join(h.ljust(w) for h, w in zip(("model", "recipe", "phase"), widths)) + " | peak GiB | measured/projected")
    print("-+-".join("-" * w for w in widths) + "-+----------+-------------------")
    for r in rows:
        print(" | ".join(v.ljust(w) for v, w in zip((r.model, r.recipe, r.phase), widths)) + f" | {r.bytes / GiB:8.2f} | {r.label}")
    print(f"\nLargest max_new_tokens that fits, by rows sampled together (prompts x G), with DINOv2-L beside and {headroom} GiB"
          " kept free; then the most rows (prompts x G) at the recipe's length:")
    print("\n".join("  " + line for line in fits))
    print("\nMeasured points (resident: weights, LoRA, its gradients and AdamW state, inputs; peak: the largest segment):")
    print("\n".join(line for m in measured for line in measured_lines(m)))
    print(f"  reward: DINOv2-L cut to {reward['depth']} block(s), {reward['renders']} renders + reference: "
          f"resident {reward['baseline'] / GiB:.2f}  peak {reward['peak'] / GiB:.2f} GiB; one block's weights "
          f"{reward['block_bytes'] / 2**20:.0f} MiB")
    prompts = ", ".join(f"{m['name']} {m['meta']['qlora']['prompt_tokens']:,}" for m in measured)
    depth = (f"{'+'.join(map(str, plan.layers))} decoder layers and 1 (Qwen2.5-VL) / 3 (Qwen3-VL: one per deepstack "
             "feature) vision blocks" if plan.layers else "at full depth")
    print(f"""
Memory: {measured[0]['meta']['qlora']['method']}; 1 GiB = 2**30 bytes.
Prompt: one chart of 40 x 25 = 1,000 image tokens (28 px per token for Qwen2.5-VL, 32 px for Qwen3-VL), the chat
  template and the instruction; tokens: {prompts}. The ViRL recipes' max_pixels keep up to 1,024 image
  tokens (802,816 px at 28 px, 1,048,576 px at 32 px), so 1,000 stands for a full-size chart.
Built {depth}; update/SFT measured at {' and '.join(map(str, plan.rows))} rows x {' and '.join(map(str, plan.tokens))}
  new tokens; sampling at G = 8 rows of one prompt, {' and '.join(map(str, plan.sample_tokens))} new tokens per depth.
Sampling runs outside autocast, as the RolloutSampler callback does; update and SFT run under bf16 autocast.
On the CPU DINOv2-L computes in fp32 (vinci autocasts it to bf16 on CUDA only): its activations read high.
Wall time of the measurements: {data.get('seconds', float('nan')):,.0f} s.""")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(ARCHS), default=list(ARCHS))
    parser.add_argument("--layers", default="2,3", help="two decoder depths to build and measure, or 'full'")
    parser.add_argument("--rows", default="1,2", help="two update/SFT micro-batch sizes to measure")
    parser.add_argument("--tokens", default="64,320", help="two update/SFT completion lengths to measure")
    parser.add_argument("--sample-tokens", default="32,16", help="sampling new tokens at each measured depth")
    parser.add_argument("--reward-depth", type=int, default=1, help="DINOv2-L blocks to build (24 = full)")
    parser.add_argument("--headroom", type=float, default=1.0, help="GiB of a budget kept free (CUDA context, fragmentation)")
    parser.add_argument("--work", default=None, help="folder for built models (default: a temporary one, removed)")
    parser.add_argument("--json", default=None, help="also write every measured figure to this file")
    parser.add_argument("--report", default=None, help="print the report of a --json file again, measuring nothing")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "TASK", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("transformers", "peft", "bitsandbytes", "timm", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if args.worker:
        worker_main(args.worker[0], Path(args.worker[1]), Path(args.worker[2]))
        return
    if args.report:
        report(json.loads(Path(args.report).read_text()), args.headroom)
        return
    full = args.layers == "full"
    ints = lambda text: tuple(int(x) for x in text.split(","))  # noqa: E731
    plan = Plan(layers=() if full else ints(args.layers), rows=ints(args.rows), tokens=ints(args.tokens),
                sample_tokens=ints(args.sample_tokens), vision_blocks=None if full else {"qwen2_5_vl": 1, "qwen3_vl": 3},
                reward_depth=args.reward_depth)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="vinci-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        log.info("reward encoder: DINOv2-L with %d block(s)", plan.reward_depth)
        data = {"plan": asdict(plan), "reward": reward_summary(in_worker("reward", {"out": str(work), "depth": plan.reward_depth,
                                                                                 "group": 8}, work)), "models": []}
        for name in args.models:
            data["models"].append(measure_model(name, plan, work))
            data["seconds"] = time.perf_counter() - started
            if args.json:  # after every model: a later failure keeps what was measured
                Path(args.json).write_text(json.dumps(data, indent=1))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    report(data, args.headroom)


if __name__ == "__main__":
    main()
