"""The ViRL pipeline is three callbacks in a fixed order; a wrong config stops with how to fix it."""

from __future__ import annotations

PIPELINE = (
    "callbacks.rollout.RolloutSampler",
    "callbacks.render.RenderRollouts",
    "callbacks.reward_logger.RewardLogger",
)

FIX = """ViRL needs these callbacks, in this order, under trainer.callbacks in the YAML:
  - class_path: callbacks.rollout.RolloutSampler      # G samples per prompt
  - class_path: callbacks.render.RenderRollouts       # renders them in the sandboxed pool
  - class_path: callbacks.reward_logger.RewardLogger  # rewards, images and code to TensorBoard
(see configs/virl.yaml)"""


def _name(callback) -> str:
    return f"{type(callback).__module__}.{type(callback).__qualname__}"


def check_pipeline(callbacks) -> None:
    """Raise ValueError unless each pipeline callback is present once and in order."""
    names = [_name(c) for c in callbacks]
    positions = []
    for wanted in PIPELINE:
        found = [i for i, name in enumerate(names) if name == wanted]
        if len(found) != 1:
            problem = "missing" if not found else "configured more than once"
            raise ValueError(f"{wanted} is {problem}.\n{FIX}")
        positions.append(found[0])
    if positions != sorted(positions):
        order = ", ".join(n.rsplit(".", 1)[-1] for _, n in sorted(zip(positions, PIPELINE)))
        raise ValueError(f"ViRL callbacks are in the wrong order ({order}).\n{FIX}")
