"""The command line: every config parses, recipes build with the tiny model, bad keys are named."""

import os
from pathlib import Path

import pytest

from main import cli_main
from vinci.checkpoint_io import LocalAtomicCheckpointIO

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(ROOT.glob("configs/**/*.yaml"))
SFT = ROOT / "configs" / "sft.yaml"


def test_there_are_configs():
    names = {p.name for p in CONFIGS}
    assert {"sft.yaml"} <= names and any("recipes" in str(p) for p in CONFIGS)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_config_parses(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # instantiating a Trainer must not write into the repository
    args = ["--config", str(config), "--trainer.accelerator=cpu", "--trainer.logger=false"]
    if "timm:" in config.read_text():  # DINOv2 weights are not on this machine: see the test below
        args.append("--model.init_args.encoder=pixel")
    cli = cli_main(args, run=False)
    assert cli.model.backbone.model
    assert cli.datamodule.processor_name == cli.model.backbone.model  # linked once
    assert isinstance(cli.trainer.strategy.checkpoint_io, LocalAtomicCheckpointIO)  # staged beside the target


def test_virl_recipe_without_local_encoder_weights_says_how_to_get_them(tmp_path, monkeypatch):
    from vinci.reward.encoders import MissingWeightsError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    recipe = ROOT / "configs" / "recipes" / "qwen2.5-vl-7b-qlora-virl.yaml"
    with pytest.raises((MissingWeightsError, ValueError), match="hf download timm/vit_large_patch14_dinov2"):  # jsonargparse may wrap it
        cli_main(["--config", str(recipe), "--trainer.accelerator=cpu", "--trainer.logger=false"], run=False)


def test_print_config_shows_resolved_keys(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(SFT), "--print_config"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "class_path: vinci.sft.SFTModule" in out and "max_length:" in out


def test_unknown_key_is_rejected_by_name(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(SFT), "--data.bacth_size=4"])
    assert exit_info.value.code != 0
    assert "bacth_size" in capsys.readouterr().err


RECIPES = [p for p in CONFIGS if "recipes" in str(p)]
RECIPE_FAMILY = {"qwen2.5-vl-": "qwen2_5_vl", "qwen3-vl-": "qwen3_vl"}  # recipe name prefix -> vinci.families name


def test_every_model_has_sft_virl_and_eval_recipes():
    names = {p.name for p in RECIPES}
    for model in ("qwen2.5-vl-3b", "qwen2.5-vl-7b", "qwen3-vl-2b", "qwen3-vl-4b", "qwen3-vl-8b"):
        assert {f"{model}-qlora-sft.yaml", f"{model}-qlora-virl.yaml", f"{model}-eval.yaml"} <= names, model


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_builds_with_its_familys_tiny_model(recipe, family_models, tmp_path, monkeypatch):
    """Each GPU recipe, with only the model (and device) swapped for its family's tiny one, loads
    the way the recipe says and takes a loss (training recipes) or scores without grads (eval)."""
    import torch
    from PIL import Image

    from vinci.data.collate import SFTCollator
    from vinci.data.rows import Example

    family = next(f for prefix, f in RECIPE_FAMILY.items() if recipe.name.startswith(prefix))
    tiny = family_models(family)
    monkeypatch.chdir(tmp_path)
    args = ["--config", str(recipe), "--trainer.accelerator=cpu", "--trainer.logger=false",
            f"--model.init_args.backbone.model={tiny}"]
    if "timm:" in recipe.read_text():  # DINOv2 weights are not on this machine
        args.append("--model.init_args.encoder=pixel")
    cli = cli_main(args, run=False)
    module = cli.model
    module.backbone.adapter = None  # new LoRA layers instead of the recipe's SFT / ViRL adapter
    module.configure_model()
    assert type(module.model.get_base_model()).__name__ == type_name(tiny)
    example = Example(Image.new("RGB", (64, 64), "white"), "<image>Write the svg code.", "svg", "```svg\n<svg/>\n```", "t:0")
    batch = SFTCollator(module.processor)([example])
    if "eval" in recipe.name:
        assert module.backbone.quantization.load_in_4bit and not any(p.requires_grad for p in module.model.parameters())
        with torch.no_grad():
            assert torch.isfinite(module.model(**batch.inputs, labels=batch.labels).loss)
        return
    assert module.backbone.quantization.load_in_4bit and module.backbone.gradient_checkpointing
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = module.model(**batch.inputs, labels=batch.labels).loss
    loss.backward()
    assert any(p.grad is not None for p in module.trainable_parameters())


def type_name(model_dir) -> str:
    import json

    return json.loads((model_dir / "config.json").read_text())["architectures"][0]


def test_allocator_defaults_to_expandable_segments_and_keeps_the_users(monkeypatch):
    from vinci.cli import default_allocator

    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    assert default_allocator() == "expandable_segments:True"
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    assert default_allocator() == "max_split_size_mb:128"
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128"


def test_cli_main_sets_the_allocator_before_anything_runs(monkeypatch):
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    with pytest.raises(SystemExit):
        cli_main(["export", "--help"])  # parses and exits: no model, no CUDA
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
