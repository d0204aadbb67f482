"""LoRA and QLoRA wrapping of the tiny model, and adapters that plain peft reloads."""

import re

import bitsandbytes as bnb
import pytest
import torch
from PIL import Image
from peft import PeftModel
from transformers import AutoModelForImageTextToText

from vinci.backbone import Backbone, Lora, Quantization, load_backbone, save_adapter
from vinci.data.collate import SFTCollator
from vinci.data.rows import Example


def _batch(processor):
    image = Image.new("RGB", (96, 96), (30, 120, 200))
    example = Example(image, "<image>Write the svg code that draws this image.", "svg", "```svg\n<svg/>\n```", "t:0")
    return SFTCollator(processor)([example, example])


def test_lora_adapts_only_language_model_linears(tiny_model):
    model, _ = load_backbone(Backbone(model=str(tiny_model)))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any(".visual." in n for n in trainable)
    assert not any("lm_head" in n for n in trainable)
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_lora_on_the_vision_tower_when_asked(tiny_model):
    model, _ = load_backbone(Backbone(model=str(tiny_model), lora=Lora(vision="lora")))
    assert any(".visual." in n and "lora_" in n for n, p in model.named_parameters() if p.requires_grad)


def test_qlora_step_changes_only_lora_and_reloads_with_plain_peft(tiny_model, tmp_path):
    settings = Backbone(model=str(tiny_model), quantization=Quantization(load_in_4bit=True, compute_dtype="float32"))
    model, processor = load_backbone(settings)
    linears = [m for n, m in model.named_modules() if n.endswith("q_proj.base_layer")]
    assert linears and all(isinstance(m, bnb.nn.Linear4bit) for m in linears)
    assert linears[0].weight.quant_type == "nf4"

    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = _batch(processor)
    model(**batch.inputs, labels=batch.labels).loss.backward()
    optimizer.step()
    after = model.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed, "the step changed nothing"
    # bitsandbytes' CPU path (without its optional compiled kernels) rewrites the 4-bit layers'
    # scaling constants (absmax) during a forward pass; the packed 4-bit weights themselves, and
    # every other base tensor, must come through the step untouched.
    quant_state = {n for n in changed if re.search(r"\.weight\.(absmax|nested_absmax|quant_state\..+)$", n)}
    assert all("lora_" in n for n in changed - quant_state), sorted(n for n in changed - quant_state if "lora_" not in n)[:5]
    assert any("lora_" in n for n in changed)
    packed = [n for n in before if n.endswith("q_proj.base_layer.weight")]
    assert packed and all(torch.equal(before[n], after[n]) for n in packed)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)

    save_adapter(model, processor, tmp_path / "adapter")
    base = AutoModelForImageTextToText.from_pretrained(str(tiny_model))
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter")
    ours = {n: p for n, p in model.named_parameters() if "lora_" in n}
    theirs = dict(reloaded.named_parameters())
    for name, value in ours.items():
        assert torch.allclose(value, theirs[name]), name


def test_qlora_trains_after_an_eval_mode_forward(tiny_model):
    """A ViRL step samples in eval mode without grad, then trains. On CPUs with AVX512-BF16,
    bitsandbytes would repack the 4-bit weights for an inference kernel at that first forward,
    and the training forward after it failed on the layers with a bias."""
    settings = Backbone(model=str(tiny_model), quantization=Quantization(load_in_4bit=True, compute_dtype="float32"))
    model, processor = load_backbone(settings)
    batch = _batch(processor)
    model.eval()
    with torch.no_grad():
        model(**batch.inputs)
    model.train()
    loss = model(**batch.inputs, labels=batch.labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_" in n)


@pytest.mark.parametrize("saved", [None, ["embed_tokens"]], ids=["lora", "lora+embeddings"])
def test_adapter_roundtrip_gives_the_same_outputs(tiny_model, tmp_path, saved):
    model, processor = load_backbone(Backbone(model=str(tiny_model), lora=Lora(modules_to_save=saved)))
    batch = _batch(processor)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**batch.inputs, labels=batch.labels).loss.backward()
    optimizer.step()
    model.eval()
    save_adapter(model, processor, tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(str(tiny_model)), tmp_path / "adapter")
    reloaded.eval()
    with torch.no_grad():
        a = model(**batch.inputs).logits
        b = reloaded(**batch.inputs).logits
    assert torch.allclose(a, b, atol=1e-5)
    # and starting a new run from that adapter keeps it trainable
    resumed, _ = load_backbone(Backbone(model=str(tiny_model), adapter=str(tmp_path / "adapter")))
    assert any(p.requires_grad for p in resumed.parameters())
    # while evaluation loads the same adapter for inference only
    frozen, _ = load_backbone(Backbone(model=str(tiny_model), adapter=str(tmp_path / "adapter")), trainable=False)
    assert not any(p.requires_grad for p in frozen.parameters())
    frozen.eval()
    with torch.no_grad():
        assert torch.allclose(frozen(**batch.inputs).logits, a, atol=1e-5)


def test_evaluation_without_adapter_freezes_the_fresh_lora_layers(tiny_model):
    model, _ = load_backbone(Backbone(model=str(tiny_model)), trainable=False)
    assert any("lora_" in n for n, _ in model.named_parameters())
    assert not any(p.requires_grad for p in model.parameters())
