"""The ViRL pipeline callbacks are found once, in any order; a missing or doubled one says how to fix it."""

import pytest

from callbacks.pipeline import find_pipeline
from callbacks.render import RenderRollouts
from callbacks.reward_logger import RewardLogger
from callbacks.rollout import RolloutSampler


def test_the_pipeline_is_found_in_any_order():
    sampler, render, logger = RolloutSampler(), RenderRollouts(), RewardLogger()
    found = find_pipeline([logger, render, sampler])  # the step orders the phases, not the list
    assert (found.sampler, found.render, found.reward_log) == (sampler, render, logger)


def test_a_missing_or_doubled_callback_says_how_to_fix():
    with pytest.raises(ValueError, match="(?s)RewardLogger is missing.*configs/virl.yaml"):
        find_pipeline([RolloutSampler(), RenderRollouts()])
    with pytest.raises(ValueError, match="RolloutSampler is configured more than once"):
        find_pipeline([RolloutSampler(), RolloutSampler(), RenderRollouts(), RewardLogger()])


def test_the_render_callback_needs_its_pool():
    with pytest.raises(RuntimeError, match="setup"):
        RenderRollouts().submit(["```svg\n<svg/>\n```"], ["svg"])
