"""Export a trained adapter: merged into its base as a plain transformers model, or as it is.

    vinci export --adapter runs/virl/adapter --out runs/virl/merged          # merge LoRA into the base
    vinci export --adapter runs/virl/adapter/step_40 --out a40 --adapter-only
    vinci export --adapter runs/virl/adapter --out merged --push-to-hub me/my-model   # online only

The merged folder holds the model, its processor and generation config: what
`AutoModelForImageTextToText.from_pretrained` and `AutoProcessor.from_pretrained` load with no
vinci or peft code. A base that trained in 4 bit (QLoRA) is loaded in 4 bit as in training,
then dequantised to `--dtype`, so the LoRA update lands on the very weights it was trained
against; the result is a full-precision model.

Loading, dequantising and merging run in host memory (CPU) whatever GPUs there are: a 7B/8B
base in bf16 (16.6-17.5 GB) does not fit a 16 GB card, and the merge is one low-rank product per layer.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Optional

import torch

from vinci.backbone import (
    BACKBONE_FILE,
    DEPRECATED_PEFT_READ,
    Backbone,
    Quantization,
    ensure_model,
    four_bit_kwargs,
    load_processor,
    resolve_adapter,
)

log = logging.getLogger(__name__)

HOST = {"": "cpu"}  # device_map: every weight in host memory


def training_backbone(adapter: Path, base: Optional[str]) -> Backbone:
    """How the base was loaded when the adapter trained: from vinci's note beside the adapter,
    else from peft's adapter_config.json (a plain base); `base` overrides the model either way."""
    note = adapter / BACKBONE_FILE
    if note.is_file():
        saved = json.loads(note.read_text())
        settings = Backbone(model=saved["model"], embedded=saved.get("embedded", False), dtype=saved.get("dtype", "auto"),
                            quantization=Quantization(**saved.get("quantization", {})))
    else:
        peft_config = json.loads((adapter / "adapter_config.json").read_text())
        settings = Backbone(model=peft_config.get("base_model_name_or_path") or "")
    if base:
        settings.model, settings.embedded = base, False
    if not settings.model:
        raise ValueError(f"the adapter at {adapter} does not name its base model: pass --base")
    return settings


def refuse_offline_push(repo_id: Optional[str]) -> None:
    from huggingface_hub import constants

    if repo_id and constants.HF_HUB_OFFLINE:
        raise SystemExit(
            f"--push-to-hub {repo_id}: the hub is switched off here (HF_HUB_OFFLINE=1); export to --out, "
            "then upload the folder while online (`hf upload <repo> <folder>`)"
        )


def merge(adapter: Path, settings: Backbone, dtype: torch.dtype):
    """(merged transformers model, processor)."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    ensure_model(settings)
    quant = settings.quantization
    kwargs: dict = dict(dtype=dtype, device_map=HOST)
    if quant.load_in_4bit:
        kwargs.update(four_bit_kwargs(quant, device_map=HOST))  # bitsandbytes quantises on the CPU too
    base = AutoModelForImageTextToText.from_pretrained(settings.model, **kwargs)
    if quant.load_in_4bit:
        base = base.dequantize()  # the NF4 weights the adapter saw, as `dtype` tensors
        base.to(dtype)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=DEPRECATED_PEFT_READ, category=FutureWarning)
        model = PeftModel.from_pretrained(base, str(adapter), torch_device="cpu")  # peft's default: the GPU
    merged = model.merge_and_unload()
    for config in (merged.config, *(getattr(merged.config, name, None) for name in ("text_config", "vision_config"))):
        if config is not None and hasattr(config, "quantization_config"):
            del config.quantization_config  # the saved model is plain full precision
    merged.hf_quantizer = None
    merged.is_quantized = False
    return merged, load_processor(str(adapter))


def export(adapter: str | Path, out: str | Path, base: Optional[str] = None, dtype: str = "bfloat16",
           adapter_only: bool = False, push_to_hub: Optional[str] = None) -> Path:
    """Write the merged model (or the adapter alone) to `out`; returns `out`."""
    refuse_offline_push(push_to_hub)
    source = resolve_adapter(adapter)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: choose a new --out")
    staged = out.with_name(f".{out.name}.partial")  # renamed into place when complete
    shutil.rmtree(staged, ignore_errors=True)
    if adapter_only:
        shutil.copytree(source, staged, symlinks=False)
    else:
        model, processor = merge(source, training_backbone(source, base), getattr(torch, dtype))
        model.save_pretrained(staged)
        processor.save_pretrained(staged)
        model.generation_config.save_pretrained(staged)
    if out.exists():
        out.rmdir()
    staged.rename(out)
    log.info("exported %s to %s", source, out)
    if push_to_hub:
        from huggingface_hub import HfApi

        HfApi().create_repo(push_to_hub, exist_ok=True)
        HfApi().upload_folder(repo_id=push_to_hub, folder_path=str(out))
        log.info("pushed %s to the hub as %s", out, push_to_hub)
    return out


def export_main(argv: Optional[list[str]] = None) -> Path:
    parser = argparse.ArgumentParser(prog="vinci export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", required=True, help="adapter folder (a run's adapter folder means its last/)")
    parser.add_argument("--out", required=True, help="new folder to write")
    parser.add_argument("--base", help="base model id or folder (default: the one the adapter trained on)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"], help="merged weights' dtype")
    parser.add_argument("--adapter-only", action="store_true", help="copy the adapter and processor, do not merge")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload the folder to this hub repo (online)")
    args = parser.parse_args(argv)
    return export(args.adapter, args.out, args.base, args.dtype, args.adapter_only, args.push_to_hub)
