"""The three callbacks a ViRL run needs, found once at fit start; a wrong set-up says how to fix it.

The step itself (`ViRLModule.training_step`) fixes the order of the phases, so the callbacks may
be listed in any order; each must be there exactly once.
"""

from __future__ import annotations

from typing import NamedTuple

from callbacks.render import RenderRollouts
from callbacks.reward_logger import RewardLogger
from callbacks.rollout import RolloutSampler

FIX = """ViRL needs these three config groups (see configs/virl.yaml):
  sampler:     {class_path: callbacks.rollout.RolloutSampler, ...}      # G samples per prompt
  render:      {class_path: callbacks.render.RenderRollouts, ...}       # renders them in the sandboxed pool
  reward_log:  {class_path: callbacks.reward_logger.RewardLogger, ...}  # rewards, images and code to TensorBoard
In Python, pass one of each to the Trainer."""


class Pipeline(NamedTuple):
    sampler: RolloutSampler
    render: RenderRollouts
    reward_log: RewardLogger


def find_pipeline(callbacks) -> Pipeline:
    """The pipeline callbacks (or subclasses) among `callbacks`; ValueError unless each is there once."""
    found = []
    for wanted in (RolloutSampler, RenderRollouts, RewardLogger):  # Pipeline's fields, in order
        matches = [callback for callback in callbacks if isinstance(callback, wanted)]
        if len(matches) != 1:
            problem = "missing" if not matches else "configured more than once"
            raise ValueError(f"{wanted.__name__} is {problem}.\n{FIX}")
        found.append(matches[0])
    return Pipeline(*found)
