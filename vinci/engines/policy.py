"""What a rollout engine samples from: a base model folder and, each optimizer step, the
policy's LoRA adapter as a fresh PEFT folder.

- `rollout_base`: the base model, with the modules the SFT adapter saved whole
  (`modules_to_save`, e.g. the embedded default's `embed_tokens`) written into it once. ViRL
  never trains them, so they belong to the base the engine loads, not to every step's adapter.
- `write_policy`: the LoRA matrices only, in standard PEFT format (vLLM's `LoRARequest` reads it).
- `refusals`: adapter features vLLM cannot apply, refused at start rather than silently dropped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

PEFT_PREFIX = "base_model.model."  # peft's name prefix before the wrapped model's own module names


def refusals(config) -> list[str]:
    """Why vLLM cannot sample this peft LoraConfig's policy (empty: it can)."""
    found = []
    if getattr(config, "use_dora", False):
        found.append("DoRA (use_dora)")
    if getattr(config, "bias", "none") != "none" or getattr(config, "lora_bias", False):
        found.append(f"LoRA bias (bias={config.bias!r}, lora_bias={getattr(config, 'lora_bias', False)})")
    if getattr(config, "rank_pattern", None) or getattr(config, "alpha_pattern", None):
        found.append("per-module ranks or alphas (rank_pattern / alpha_pattern)")
    for name in ("target_parameters", "trainable_token_indices", "layers_to_transform", "layer_replication"):
        if getattr(config, name, None):
            found.append(name)
    if getattr(config, "use_qalora", False) or getattr(config, "use_bdlora", None):
        found.append("QA-LoRA / BD-LoRA")
    return found


def saved_modules(model, adapter: str = "default") -> dict[str, torch.Tensor]:
    """{checkpoint key: tensor} of the modules the adapter keeps whole (modules_to_save)."""
    from peft.utils.other import ModulesToSaveWrapper

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, ModulesToSaveWrapper) and adapter in module.modules_to_save:
            prefix = name[len(PEFT_PREFIX):] if name.startswith(PEFT_PREFIX) else name
            for key, value in module.modules_to_save[adapter].state_dict().items():
                out[f"{prefix}.{key}"] = value.detach().to("cpu").contiguous()
    return out


def base_folder(model_name: str) -> Path:
    """The local folder of a hub id or path (from the local cache only: never downloads)."""
    path = Path(model_name)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model_name, local_files_only=True))


def rollout_base(model, model_name: str, out_dir: str | Path) -> Path:
    """The base the engine loads: `model_name` itself, or, when the policy keeps whole modules,
    a copy of it in `out_dir` with those modules' trained weights written in (once per run).

    The copy is the base loaded afresh on the CPU in its checkpoint dtype, given the saved
    modules by their module names and written with `save_pretrained`, so transformers maps
    the names to the checkpoint's own and keeps tied weights tied."""
    saved = saved_modules(model)
    source = base_folder(model_name)
    if not saved:
        return source
    from transformers import AutoModelForImageTextToText

    fresh = AutoModelForImageTextToText.from_pretrained(source, dtype="auto", device_map="cpu")
    expected = fresh.state_dict()
    missing = sorted(k for k in saved if k not in expected)
    if missing:
        raise ValueError(f"the adapter saves {missing} whole, but the base at {source} has no such weights: "
                         "the rollout base cannot be built")
    for key, value in saved.items():
        if value.shape != expected[key].shape:
            raise ValueError(f"{key}: the adapter's is {tuple(value.shape)}, the base's {tuple(expected[key].shape)}")
    fresh.load_state_dict({k: v.to(expected[k].dtype) for k, v in saved.items()}, strict=False)
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.index.json"))  # processor files
    fresh.save_pretrained(out)
    return out


def write_policy(model, out_dir: str | Path, adapter: str = "default") -> Path:
    """The adapter's LoRA matrices in PEFT format (adapter_config.json + adapter_model.safetensors),
    without modules_to_save (baked into the rollout base)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(model, adapter_name=adapter)
    lora = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items() if ".lora_" in k}
    save_file(lora, out / "adapter_model.safetensors", metadata={"format": "pt"})
    config = model.peft_config[adapter].to_dict()
    config.update(modules_to_save=None, inference_mode=True, base_model_name_or_path=None)
    for key, value in list(config.items()):
        if isinstance(value, set):
            config[key] = sorted(value)
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, default=str))
    return out


def has_vision_lora(model) -> bool:
    """True when any LoRA layer sits in the vision tower or its projector."""
    from vinci.backbone import VISION_PARTS

    return any(".lora_A." in name and any(f".{part}." in name for part in VISION_PARTS) for name, _ in model.named_parameters())
