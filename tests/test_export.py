"""`vinci export`: a merged model that plain transformers loads answers as base + adapter does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from peft import PeftModel
from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

from main import cli_main
from vinci.backbone import BACKBONE_FILE, Backbone, Quantization, load_backbone, save_adapter
from vinci.data.collate import RLCollator
from vinci.data.rows import Example
from vinci.export import export
from vinci.generation import sample


def trained_adapter(tiny_model: Path, out: Path, quantized: bool = False) -> Path:
    """A LoRA adapter whose update is not the identity (random B matrices), saved as AdapterExport does."""
    settings = Backbone(model=str(tiny_model), quantization=Quantization(load_in_4bit=quantized))
    model, processor = load_backbone(settings)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return save_adapter(model, processor, out, settings)


def prompt_batch(processor):
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    return RLCollator(processor)([Example(image, "<image>Write the svg code for this image.", "svg", None, "t:0")]).inputs


def greedy(model, processor, inputs) -> list[int]:
    return sample(model, processor, inputs, num_samples=1, max_new_tokens=24, do_sample=False).completion_ids[0].tolist()


def test_merged_model_loads_without_vinci_and_answers_as_base_plus_adapter(tiny_model, tmp_path):
    adapter = trained_adapter(tiny_model, tmp_path / "adapter")
    out = cli_main(["export", "--adapter", str(adapter), "--out", str(tmp_path / "merged"), "--dtype", "float32"])
    assert (out / "config.json").is_file() and (out / "generation_config.json").is_file()
    assert (out / "preprocessor_config.json").is_file() or (out / "processor_config.json").is_file()

    merged = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(out)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    processor.tokenizer.padding_side = "left"
    base = AutoModelForImageTextToText.from_pretrained(tiny_model, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, str(adapter)).eval()
    plain_base = AutoModelForImageTextToText.from_pretrained(tiny_model, dtype=torch.float32).eval()
    inputs = prompt_batch(processor)
    with torch.no_grad():
        merged_logits = merged(**inputs).logits
        adapted_logits = adapted(**inputs).logits
        base_logits = plain_base(**inputs).logits
    assert torch.allclose(merged_logits, adapted_logits, atol=1e-4)
    assert not torch.allclose(merged_logits, base_logits, atol=1e-2)  # the adapter did change the model
    assert greedy(merged, processor, inputs) == greedy(adapted, processor, inputs)


def test_a_4bit_base_is_dequantised_and_saved_in_full_precision(tiny_model, tmp_path):
    adapter = trained_adapter(tiny_model, tmp_path / "adapter", quantized=True)
    assert json.loads((adapter / BACKBONE_FILE).read_text())["quantization"]["load_in_4bit"]
    out = export(adapter, tmp_path / "merged", dtype="float32")
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    merged = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32).eval()
    linear = [m for m in merged.modules() if isinstance(m, torch.nn.Linear)]
    assert linear and all(m.weight.dtype == torch.float32 for m in linear)

    processor = AutoProcessor.from_pretrained(out)
    processor.tokenizer.padding_side = "left"
    inputs = prompt_batch(processor)
    four_bit = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16)
    nf4 = AutoModelForImageTextToText.from_pretrained(tiny_model, dtype=torch.float32, quantization_config=four_bit,
                                                      device_map={"": "cpu"})
    dequantised = PeftModel.from_pretrained(nf4.dequantize().to(torch.float32), str(adapter)).eval()
    plain = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny_model, dtype=torch.float32), str(adapter)).eval()
    with torch.no_grad():
        merged_logits = merged(**inputs).logits
        trained = dequantised(**inputs).logits
        unquantised = plain(**inputs).logits
    # the LoRA update lands on the NF4 weights the adapter trained against, not on the original ones
    assert torch.allclose(merged_logits, trained, atol=1e-4)
    assert not torch.allclose(merged_logits, unquantised, atol=1e-3)


def test_a_run_folder_exports_its_last_adapter_alone(tiny_model, tmp_path):
    run = tmp_path / "run-adapter"
    trained_adapter(tiny_model, run / "step_7")
    (run / "last").symlink_to("step_7")
    out = export(run, tmp_path / "copy", adapter_only=True)
    assert (out / "adapter_config.json").is_file() and not (out / "config.json").exists()
    assert not (out / "adapter_model.safetensors").is_symlink()
    PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny_model), str(out))


def test_push_to_hub_is_refused_offline_before_any_work(tiny_model, tmp_path, monkeypatch):
    from huggingface_hub import constants

    adapter = trained_adapter(tiny_model, tmp_path / "adapter")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SystemExit, match="HF_HUB_OFFLINE"):
        export(adapter, tmp_path / "merged", push_to_hub="me/model")
    assert not (tmp_path / "merged").exists()


def test_export_refuses_a_non_empty_folder_and_a_missing_adapter(tiny_model, tmp_path):
    adapter = trained_adapter(tiny_model, tmp_path / "adapter")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        export(adapter, tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    with pytest.raises(FileNotFoundError, match="no PEFT adapter"):
        export(tmp_path / "nowhere", tmp_path / "out")


def test_a_4bit_base_is_loaded_and_merged_on_the_cpu_even_beside_a_gpu(tiny_model, tmp_path, monkeypatch):
    """A 7B/8B base dequantised on a 16 GB GPU does not fit: export works in host memory whatever GPUs exist."""
    adapter = trained_adapter(tiny_model, tmp_path / "adapter", quantized=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    calls = []
    real_load, real_adapter = AutoModelForImageTextToText.from_pretrained, PeftModel.from_pretrained

    def load(model, **kwargs):
        calls.append("base")
        assert kwargs.get("device_map") == {"": "cpu"}  # quantised and dequantised in host memory
        return real_load(model, **kwargs)

    def load_adapter(base, path, **kwargs):
        calls.append("adapter")
        assert kwargs.get("torch_device") == "cpu"  # peft reads the adapter onto the GPU when there is one
        return real_adapter(base, path, **kwargs)

    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", load)
    monkeypatch.setattr(PeftModel, "from_pretrained", load_adapter)
    out = export(adapter, tmp_path / "merged", dtype="float32")
    assert calls == ["base", "adapter"]
    assert (out / "config.json").is_file()
