"""The ViRL pipeline is three callbacks in a fixed order; a wrong set-up stops with how to fix it.

Through the command line the order is fixed by construction (vinci/cli.py's named groups); this
check catches a pipeline group left out, or callbacks assembled by hand in Python.
"""

from __future__ import annotations

from callbacks.render import RenderRollouts
from callbacks.reward_logger import RewardLogger
from callbacks.rollout import RolloutSampler

PIPELINE = (RolloutSampler, RenderRollouts, RewardLogger)

FIX = """ViRL needs these three config groups (see configs/virl.yaml), which run in this order:
  sampler:     {class_path: callbacks.rollout.RolloutSampler, ...}      # G samples per prompt
  render:      {class_path: callbacks.render.RenderRollouts, ...}       # renders them in the sandboxed pool
  reward_log:  {class_path: callbacks.reward_logger.RewardLogger, ...}  # rewards, images and code to TensorBoard
In Python, pass them to the Trainer in that order."""


def check_pipeline(callbacks) -> None:
    """Raise ValueError unless each pipeline callback (or a subclass) is present once and in order."""
    callbacks = list(callbacks)
    positions = []
    for wanted in PIPELINE:
        found = [i for i, callback in enumerate(callbacks) if isinstance(callback, wanted)]
        if len(found) != 1:
            problem = "missing" if not found else "configured more than once"
            raise ValueError(f"{wanted.__name__} is {problem}.\n{FIX}")
        positions.append(found[0])
    if positions != sorted(positions):
        order = ", ".join(w.__name__ for _, w in sorted(zip(positions, PIPELINE)))
        raise ValueError(f"ViRL callbacks are in the wrong order ({order}).\n{FIX}")
