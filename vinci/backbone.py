"""Load a vision-language model and its processor, then wrap it with LoRA or QLoRA.

One path for every model: `AutoModelForImageTextToText` + `AutoProcessor` on a hub id or a local
directory (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, SmolVLM/Idefics3, and the embedded tiny model, which
is just a local directory). The result is always a `peft.PeftModel`, so the adapter saves in
standard PEFT format and `PeftModel.from_pretrained` reloads it with no vinci code.

Variants are settings, not code paths: QLoRA is LoRA plus `Quantization(load_in_4bit=True)`.

The model loads onto the device it will run on, and `dtype: auto` follows that device: inside
Lightning, the trainer's (BackboneModule passes its own device); elsewhere the caller's, the CPU
unless it says otherwise. Whether the machine has a GPU decides neither.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

import torch
from torch import nn

log = logging.getLogger(__name__)

# Submodules that hold the vision encoder and its projector, by the names transformers uses.
# peft reads transformers' deprecated `is_gradient_checkpointing` when it wraps a model; harmless.
DEPRECATED_PEFT_READ = r".*is_gradient_checkpointing.*"
VISION_PARTS = ("visual", "vision_tower", "vision_model", "multi_modal_projector", "connector", "merger")


@dataclass
class Lora:
    """LoRA settings (peft.LoraConfig)."""

    r: int = 16  # rank: higher = more capacity, more memory
    alpha: int = 32  # scale is alpha / r
    dropout: float = 0.05  # dropout on the LoRA input
    target_modules: Union[str, list[str]] = "all-linear"  # "all-linear" = every linear layer of the language model
    vision: Literal["frozen", "lora"] = "frozen"  # also put LoRA on the vision tower's linear layers
    modules_to_save: Optional[list[str]] = None  # whole modules trained and saved in the adapter, e.g. [embed_tokens]


@dataclass
class Quantization:
    """bitsandbytes 4-bit loading of the base model (QLoRA)."""

    load_in_4bit: bool = False  # true = QLoRA: base weights in 4 bit, LoRA in compute dtype
    quant_type: Literal["nf4", "fp4"] = "nf4"  # NF4 is the QLoRA paper's data type
    double_quant: bool = True  # quantise the quantisation constants too (~0.4 bit/param saved)
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"  # matmul dtype of 4-bit layers


@dataclass
class Backbone:
    """Which model to load and how to adapt it."""

    model: str = "artifacts/tiny-vlm"  # hub id or local directory
    embedded: bool = False  # build the embedded tiny VLM at `model` first when the directory is missing
    adapter: Optional[str] = None  # start from this PEFT adapter directory (e.g. the SFT adapter)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto = bf16 on a CUDA device, fp32 on the CPU
    attn_implementation: Optional[str] = "sdpa"  # sdpa | eager | flash_attention_2; None = model default
    gradient_checkpointing: bool = False  # recompute activations: less memory, ~30% slower
    lora: Lora = field(default_factory=Lora)
    quantization: Quantization = field(default_factory=Quantization)


def resolve_dtype(name: str, device: torch.device | str) -> torch.dtype:
    """`name` as a torch dtype; "auto" is bf16 when the model runs on a CUDA device, else fp32."""
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return getattr(torch, name)


def default_device() -> torch.device:
    """For standalone tools (export, benchmarks): the current CUDA device if there is one, else
    the CPU. Training and evaluation use the trainer's device instead (BackboneModule)."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def _named_part(model: nn.Module, names: tuple[str, ...]) -> list[str]:
    """Qualified names of the submodules whose last name component is one of `names`."""
    found = []
    for name, _ in model.named_modules():
        if name.rsplit(".", 1)[-1] in names and not any(name.startswith(f + ".") for f in found):
            found.append(name)
    return found


def lora_target_regex(model: nn.Module, include_vision: bool) -> str:
    """A peft target regex for every linear layer of the language model (and the vision tower).

    Compact on purpose (it is written into adapter_config.json): the leaf names of the chosen
    linear layers, with the vision submodules excluded by a negative look-ahead unless wanted.
    The output head is never adapted. Plain and bitsandbytes 4-bit layers are both nn.Linear.
    """
    vision = _named_part(model, VISION_PARTS)
    chosen = set()
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or name.endswith("lm_head"):
            continue
        if not include_vision and any(name.startswith(v + ".") for v in vision):
            continue
        chosen.add(name)
    if not chosen:
        raise ValueError("found no linear layers to put LoRA on")
    leaves = sorted({name.rsplit(".", 1)[-1] for name in chosen})
    pattern = r".*\.(" + "|".join(map(re.escape, leaves)) + r")$"
    if vision and not include_vision:
        pattern = r"^(?!(" + "|".join(map(re.escape, vision)) + r")\.)" + pattern
    matched = {name for name, _ in model.named_modules() if re.fullmatch(pattern, name)}
    if matched != chosen:  # a leaf name is ambiguous (e.g. "0" in a Sequential): list full names
        pattern = "^(" + "|".join(sorted(map(re.escape, chosen))) + ")$"
    return pattern


def trainable_split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Trainable parameters as (language side, vision tower and its projector)."""
    parts = _named_part(model, VISION_PARTS)
    language, vision = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (vision if any(name.startswith(part + ".") for part in parts) else language).append(parameter)
    return language, vision


def vision_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the vision tower and its projector, trainable or not."""
    parts = _named_part(model, VISION_PARTS)
    return [(n, p) for n, p in model.named_parameters() if any(n.startswith(part + ".") for part in parts)]


def ensure_model(settings: Backbone) -> None:
    """Build the embedded tiny model when asked to and missing. No network either way."""
    if settings.embedded:  # reused when its completion stamp matches, rebuilt otherwise
        from vinci.tiny import build_tiny_vlm

        build_tiny_vlm(settings.model)


def load_processor(model: str):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model)
    processor.tokenizer.padding_side = "left"  # generation needs left padding; SFT masks pads anyway
    return processor


def four_bit_kwargs(quant: Quantization, device_map=None, device: torch.device | str | None = None) -> dict:
    """from_pretrained arguments that load the base in 4 bit (bitsandbytes) on `device` (None:
    `default_device()`), or as `device_map` places it."""
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.quant_type,
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, quant.compute_dtype),
    )
    device = torch.device(device) if device is not None else default_device()
    return {"quantization_config": config, "device_map": device_map or {"": device}}


def load_backbone(settings: Backbone, device_map=None, trainable: bool = True, device: torch.device | str = "cpu"):
    """Return (peft model, processor), the model on `device` (or placed by `device_map`), in the
    dtype `settings.dtype` names, where "auto" follows `device`. With `trainable`, ready for
    training: only LoRA parameters require grad. Without it (evaluation), nothing requires grad
    and a 4-bit model is not prepared for k-bit training (no fp32 upcasts, no input grads)."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForImageTextToText

    ensure_model(settings)
    device = torch.device(device)
    dtype = resolve_dtype(settings.dtype, device)
    kwargs = dict(dtype=dtype)
    if settings.attn_implementation:
        kwargs["attn_implementation"] = settings.attn_implementation
    quant = settings.quantization
    if quant.load_in_4bit:
        kwargs.update(four_bit_kwargs(quant, device_map, device))
    elif device_map is not None:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForImageTextToText.from_pretrained(settings.model, **kwargs)
    except OSError as err:
        raise OSError(
            f"could not load model {settings.model!r}: give a local model directory, a hub id "
            f"already in the local cache, or set `embedded: true` for the tiny default ({err})"
        ) from err
    if device_map is None and not quant.load_in_4bit:
        model.to(device)
    processor = load_processor(settings.model)

    if quant.load_in_4bit and trainable:
        prepare_4bit_training(model, dtype, settings.gradient_checkpointing)
    elif settings.gradient_checkpointing and trainable:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if settings.gradient_checkpointing and trainable:
        model.config.use_cache = False

    if settings.adapter:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=DEPRECATED_PEFT_READ, category=FutureWarning)
            model = PeftModel.from_pretrained(model, str(resolve_adapter(settings.adapter)), is_trainable=trainable)
    else:
        lora = settings.lora
        targets = lora.target_modules
        if targets == "all-linear":
            targets = lora_target_regex(model, include_vision=lora.vision == "lora")
        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=targets,
            modules_to_save=lora.modules_to_save,
            ensure_weight_tying=bool(lora.modules_to_save),  # a tied output head follows a trained embedding
            bias="none",
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=DEPRECATED_PEFT_READ, category=FutureWarning)
            model = get_peft_model(model, config)
        if not trainable:  # fresh LoRA layers are the identity: this evaluates the base model
            model.requires_grad_(False)
    model.train(trainable)  # from_pretrained leaves eval mode on, which would switch LoRA dropout off
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("loaded %s: %d trainable of %d parameters", settings.model, n_trainable, total)
    return model, processor


def prepare_4bit_training(model, dtype: torch.dtype, gradient_checkpointing: bool) -> None:
    """Ready a 4-bit model for LoRA training: a frozen base, input grads for checkpointing.

    peft's `prepare_model_for_kbit_training` does this too, but also casts every tensor that is
    not 4-bit (embeddings, norms, the output head, the vision tower) to float32, which doubles
    their memory and turns the hidden stream and the KV cache float32. That upcast guards fp16
    training; bf16 does not need it, so it is kept for fp16 only.
    """
    model.requires_grad_(False)
    if dtype == torch.float16:
        for parameter in model.parameters():
            if parameter.dtype == torch.float16:
                parameter.data = parameter.data.float()
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    keep_4bit_weights_trainable(model)


def resolve_adapter(path: str | Path) -> Path:
    """The PEFT adapter folder at `path`: the folder itself, or the `last` adapter of a run's
    adapter folder (callbacks.adapter.AdapterExport writes step_N/ and last/ there)."""
    path = Path(path)
    for candidate in (path, path / "last"):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    raise FileNotFoundError(f"no PEFT adapter at {str(path)!r} (no adapter_config.json there or in {str(path / 'last')!r})")


def keep_4bit_weights_trainable(model) -> None:
    """Stop bitsandbytes repacking 4-bit weights for its CPU inference kernel.

    On a CPU with AVX512-BF16, a 4-bit layer's first forward in eval mode without grad (a ViRL
    rollout, an SFT sample) repacks its weight for a kernel that has no backward, and keeps it
    so: the next training forward then fails inside bitsandbytes. A model that will train keeps
    the training layout; GPUs are unaffected.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def tie_output_head(model, adapter_name: str) -> None:
    """Give a loaded adapter's trained input embedding its tied output head.

    peft ties the output head to a trained (modules_to_save) embedding for the adapter it creates
    or loads first. An adapter added later with `load_adapter` gets its own embedding copy but no
    head copy, so while it is active the head falls back to the base model's untrained weights.
    This adds that copy, sharing the adapter's embedding weight, as peft does for the first one.
    """
    from peft.utils.other import ModulesToSaveWrapper

    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    if not (isinstance(embed, ModulesToSaveWrapper) and isinstance(head, ModulesToSaveWrapper)):
        return
    tied = head.original_module.weight is embed.original_module.weight
    if tied and adapter_name in embed.modules_to_save and adapter_name not in head.modules_to_save:
        head.update(adapter_name, tied_module=embed.modules_to_save[adapter_name])


BACKBONE_FILE = "vinci_backbone.json"  # how the base was loaded for training, beside the adapter


def save_adapter(model, processor, out_dir: str | Path, settings: Optional[Backbone] = None) -> Path:
    """Write the adapter in standard PEFT format, with the processor beside it (and, given
    `settings`, how the base was loaded, which `vinci export` reads to rebuild it)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    if settings is not None:
        (out / BACKBONE_FILE).write_text(json.dumps(asdict(settings), indent=2))
    return out
