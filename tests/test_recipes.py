"""The GPU recipes agree with each other: eval scores the model that trained."""

from __future__ import annotations

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
