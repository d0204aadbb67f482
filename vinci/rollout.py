"""The rollout of one ViRL step, as it travels sampler -> renderer -> training step -> logger.

One typed object, filled in stage by stage, instead of a dict whose keys change on the way.
Rows are prompt-major: row n belongs to prompt n // G, so `.view(B, G)` regroups any [N] tensor.
`rows_of` and `sequence_inputs` (a rollout's rows as model inputs) live in vinci.inputs.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Optional

from vinci.data.collate import RLBatch
from vinci.generation import Completions
from vinci.inputs import rows_of, sequence_inputs  # noqa: F401  (re-exported: the model-input rules live in vinci.inputs)


@dataclass
class Rollout:
    batch: RLBatch  # B prompts with their reference images
    completions: Completions  # N = B * G sampled answers
    group_size: int  # G
    codes: list[Optional[str]] = field(default_factory=list)  # [N] extracted code, None without a fenced block
    render_future: Optional[Future] = None  # resolves to list[RenderResult] [N]
    render_jobs: int = 0  # distinct programs sent to the renderers (repeats render once)
    renders: Optional[list] = None  # [N] RenderResult, once waited for
    rewards: Optional[object] = None  # RewardParts of [N] tensors, set by the training step
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per phase: sample, render, score, update

    @property
    def num_prompts(self) -> int:
        return len(self.batch.images)

    @property
    def languages(self) -> list[str]:
        """[N] target language of each row."""
        return [lang for lang in self.batch.languages for _ in range(self.group_size)]

    @property
    def references(self) -> list:
        """[N] the reference image of each row (the same object G times per prompt)."""
        return [image for image in self.batch.images for _ in range(self.group_size)]

    def wait_renders(self) -> list:
        if self.renders is None:
            if self.render_future is None:
                raise RuntimeError("no renders were started: is the RenderRollouts callback configured?")
            self.renders = self.render_future.result()
        return self.renders
