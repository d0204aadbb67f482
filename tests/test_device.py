"""The backbone loads onto the device it will run on, in the dtype `auto` picks for that device.

These run on a CPU machine that pretends to have a GPU (torch.cuda patched): what decides the
device and dtype must be the trainer's accelerator (or the caller's device), never the machine.
"""

import bitsandbytes as bnb
import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForImageTextToText

from vinci.backbone import Backbone, Quantization, load_backbone
from vinci.module import BackboneModule


@pytest.fixture
def machine_with_a_gpu(monkeypatch):
    """torch.cuda says a bf16-capable GPU is there; from_pretrained's arguments are recorded, and
    loading onto anything but the CPU fails here (there is no GPU to load onto)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    loads = []
    load = AutoModelForImageTextToText.from_pretrained

    def recording_load(*args, **kwargs):
        loads.append(kwargs)
        placed = {torch.device(d) for d in (kwargs.get("device_map") or {}).values()}
        assert placed <= {torch.device("cpu")}, f"loads onto {placed} on a CPU-only run"
        return load(*args, **kwargs)

    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", recording_load)
    return loads


class Probe(BackboneModule):
    """Records where the model is when a CPU batch reaches it."""

    def validation_step(self, batch, batch_idx):
        self.seen = {(p.device.type, p.dtype) for p in self.model.parameters() if p.dtype.is_floating_point}
        assert batch.device.type == "cpu"


def settings(model, qlora: bool) -> Backbone:  # dtype "auto", as the configs leave it
    return Backbone(model=str(model), quantization=Quantization(load_in_4bit=qlora, compute_dtype="float32"))


@pytest.mark.parametrize("qlora", [False, True], ids=["lora", "qlora"])
def test_a_cpu_trainer_loads_fp32_on_the_cpu_on_a_gpu_machine(tiny_model, machine_with_a_gpu, qlora):
    module = Probe(settings(tiny_model, qlora), optimizer=torch.optim.AdamW)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(module, DataLoader(torch.zeros(1, 1)), verbose=False)
    assert machine_with_a_gpu[0]["dtype"] == torch.float32
    assert module.seen == {("cpu", torch.float32)}
    if qlora:
        quantised = [m for n, m in module.model.named_modules() if n.endswith("q_proj.base_layer")]
        assert quantised and all(isinstance(m, bnb.nn.Linear4bit) for m in quantised)


def test_without_a_device_load_backbone_stays_on_the_cpu(tiny_model, machine_with_a_gpu):
    """What tests and CPU tools call: a GPU on the machine must not move their model off the CPU."""
    model, _ = load_backbone(settings(tiny_model, qlora=True), trainable=False)
    assert machine_with_a_gpu[0]["dtype"] == torch.float32
    assert {p.device.type for p in model.parameters()} == {"cpu"}


class Loaded(Exception):
    pass


@pytest.mark.parametrize("qlora", [False, True], ids=["lora", "qlora"])
def test_a_module_on_a_gpu_loads_bf16_there(tiny_model, monkeypatch, qlora):
    """The other way round: a module whose device is a GPU asks for bf16 on that GPU (the
    arguments are checked; nothing is loaded)."""
    asked = {}

    def stop(*args, **kwargs):
        asked.update(kwargs)
        raise Loaded

    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", stop)
    module = BackboneModule(settings(tiny_model, qlora), optimizer=torch.optim.AdamW)
    module._device = torch.device("cuda", 1)  # what Lightning sets for a GPU trainer before configure_model
    with pytest.raises(Loaded):
        module.configure_model()
    assert asked["dtype"] == torch.bfloat16
    if qlora:
        assert asked["device_map"] == {"": torch.device("cuda", 1)}
