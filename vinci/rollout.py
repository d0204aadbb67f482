"""The rollout of one ViRL step, as it travels sampler -> renderer -> training step -> logger.

One typed object, filled in stage by stage, instead of a dict whose keys change on the way.
Rows are prompt-major: row n belongs to prompt n // G, so `.view(B, G)` regroups any [N] tensor.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Optional

import torch

from vinci.data.collate import RLBatch
from vinci.generation import Completions


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


def rows_of(inputs: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
    """The prompt inputs of the given batch rows; images follow their rows.

    Qwen-style processors concatenate every image's patches in `pixel_values` [sum(t*h*w), D]
    and give the patch count per image in `image_grid_thw` [B, 3]; others keep a batch dim.
    """
    out = {}
    batch = inputs["input_ids"].shape[0]
    grid = inputs.get("image_grid_thw")
    if grid is not None:
        sizes = grid.prod(dim=1).tolist()
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        out["pixel_values"] = torch.cat([inputs["pixel_values"][starts[r] : starts[r] + sizes[r]] for r in rows])
        out["image_grid_thw"] = grid[rows]
    index = torch.tensor(rows, device=inputs["input_ids"].device)
    for key, value in inputs.items():
        if key in out:
            continue
        if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == batch:
            out[key] = value.index_select(0, index)
        else:
            out[key] = value
    return out


def sequence_inputs(rollout: Rollout, rows: list[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Model inputs for prompt + completion of the given rollout rows.

    Returns (inputs, completion ids [n, L], completion mask [n, L]).
    """
    done = rollout.completions
    prompts = [r // rollout.group_size for r in rows]
    inputs = rows_of(rollout.batch.inputs, prompts)
    index = torch.tensor(rows, device=done.sequences.device)
    ids = done.completion_ids.index_select(0, index)  # [n, L]
    mask = done.completion_mask.index_select(0, index)  # [n, L]
    prompt_mask = inputs["attention_mask"]  # [n, P]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], ids], dim=1)  # [n, P + L]
    inputs["attention_mask"] = torch.cat([prompt_mask, mask.to(prompt_mask.dtype)], dim=1)  # [n, P + L]
    for key, value in list(inputs.items()):  # per-token extras such as mm_token_type_ids
        if key not in ("input_ids", "attention_mask") and torch.is_tensor(value) and value.shape[:2] == prompt_mask.shape:
            inputs[key] = torch.cat([value, value.new_zeros(value.shape[0], ids.shape[1])], dim=1)
    return inputs, ids, mask
