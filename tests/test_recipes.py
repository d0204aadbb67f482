"""The GPU recipes agree with each other and start on any data: eval scores the model that trained, SFT runs on a subset."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from vinci.cli import parse_config

RECIPES = Path(__file__).resolve().parents[1] / "configs" / "recipes"
EVALS = sorted(RECIPES.glob("*-eval.yaml"))


def backbone(recipe: Path):
    return parse_config(["--config", str(recipe)]).model.init_args.backbone


def test_there_are_eval_recipes():
    assert len(EVALS) >= 5


@pytest.mark.parametrize("recipe", EVALS, ids=lambda p: p.name)
def test_eval_recipe_loads_the_base_as_its_training_recipes_do(recipe):
    """A QLoRA adapter learned against the NF4 base: scoring it on a bf16 base scores another
    model (and a 7B/8B bf16 base does not fit 16 GB)."""
    model = recipe.name.removesuffix("-eval.yaml")
    scored = backbone(recipe)
    for stage in ("sft", "virl"):
        trained = backbone(RECIPES / f"{model}-qlora-{stage}.yaml")
        assert trained.quantization.load_in_4bit  # the premise: the training recipes are QLoRA
        assert (scored.model, scored.dtype) == (trained.model, trained.dtype), stage
        assert scored.quantization == trained.quantization, stage


SFTS = sorted(RECIPES.glob("*-qlora-sft.yaml"))


def validation_schedule(recipe: Path) -> tuple:
    trainer = parse_config(["--config", str(recipe)]).trainer
    return trainer.val_check_interval, trainer.check_val_every_n_epoch, trainer.limit_val_batches


def test_sft_recipes_train_on_fewer_batches_than_their_validation_interval(tiny_model, tmp_path, monkeypatch):
    """A first trial on a 4-row subset: each SFT recipe's validation schedule must start, not stop
    with Lightning's "`val_check_interval` (500) must be less than or equal to the number of the
    training batches". One run per distinct schedule (all recipes share one today)."""
    from main import cli_main
    from tests.data.conftest import b64_png, sft_row, write_jsonl

    monkeypatch.chdir(tmp_path)  # the recipe writes runs/...
    rows = write_jsonl(tmp_path / "train.jsonl", [sft_row(b64_png(color=c)) for c in ("red", "green", "blue", "white")])
    schedules = {}
    for recipe in SFTS:
        schedules.setdefault(validation_schedule(recipe), recipe)
    for recipe in schedules.values():
        cli = cli_main(["fit", "--config", str(recipe), "--trainer.accelerator=cpu",  # its TensorBoard logger writes in tmp_path
                        "--trainer.enable_progress_bar=false", "--trainer.accumulate_grad_batches=2",
                        f"--model.init_args.backbone.model={tiny_model}", f"--data.train={rows}", "--data.num_workers=0"])
        trainer = cli.trainer
        assert trainer.num_training_batches < trainer.val_check_interval, recipe.name  # the premise
        assert trainer.global_step == math.ceil(trainer.num_training_batches / 2), recipe.name  # the whole epoch trained


TRAINING = sorted(RECIPES.glob("*-qlora-*.yaml"))


@pytest.mark.parametrize("recipe", TRAINING, ids=lambda p: p.name)
def test_training_recipes_use_an_lm_head_chunk_sized_for_a_gpu(recipe):
    """Each head call reads the whole [V, H] head from GPU memory; 64 positions per read (the CPU
    default) leave that matmul bandwidth-bound."""
    assert parse_config(["--config", str(recipe)]).model.init_args.head_chunk >= 256


VIRLS = sorted(RECIPES.glob("*-qlora-virl.yaml"))


@pytest.mark.parametrize("recipe", VIRLS, ids=lambda p: p.name)
def test_virl_recipes_update_on_a_real_rollout_batch_sampled_in_chunks(recipe):
    """VinciCoder updates on 256 prompts x 8; a recipe takes at least 32 x 8 per update, and
    samples it a few prompts at a time, so the KV cache is the chunk's, not the batch's."""
    config = parse_config(["--config", str(recipe)])
    sampler, model = config.sampler.init_args, config.model.init_args
    assert config.data.batch_size >= 32 and sampler.num_samples == 8
    assert 1 <= sampler.prompts_per_generation <= 4 and config.data.batch_size % sampler.prompts_per_generation == 0
    assert model.mini_batches == 1 and model.ppo_epochs == 1  # one update per rollout batch, as VinciCoder
    assert model.optimizer.init_args.lr == pytest.approx(1e-5)  # LoRA rate (TRL's Qwen2.5-VL GRPO example)
