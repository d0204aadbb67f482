"""The rollout of one ViRL step: B prompts x G sampled answers, their renders and rewards.

One typed object that the step's phases fill in turn (vinci.virl.ViRLModule.training_step):

    sample          completion ids, masks and texts, chunk by chunk      -> [N, L], [N]
    submit_renders  each chunk's programs, sent to the pool at once, and their
                    scoring queued on the scorer's thread                -> pending
    score           waits for every chunk's rewards                      -> RewardParts [N]
    advantages, update read it; the reward logger gets it from the step's outputs.

Rows are prompt-major: row n belongs to prompt n // G, so `.view(B, G)` regroups any [N] tensor.
Everything here stays in host memory; `sequence_inputs` builds one micro-batch of model inputs
and moves only that to the device, so device memory does not grow with the rollout batch.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Optional

import torch

from vinci.data.collate import RLBatch
from vinci.inputs import rows_of, trim_left_padding, with_completion
from vinci.reward.format import RewardParts
from vinci.reward.programs import ProgramRenders, Scorer


def prompt_chunk(batch: RLBatch, start: int, stop: int) -> RLBatch:
    """Prompts [start, stop) of a batch, without the left padding that only longer prompts needed."""
    size = len(batch.images)
    inputs = trim_left_padding(rows_of(batch.inputs, list(range(start, stop))))
    sliced = {
        f.name: getattr(batch, f.name)[start:stop]
        for f in dataclasses.fields(batch)
        if f.name != "inputs" and len(getattr(batch, f.name)) == size  # per-prompt lists; [] stays []
    }
    return dataclasses.replace(batch, inputs=inputs, **sliced)


def to_device(inputs: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in inputs.items()}


@dataclass
class Rollout:
    batch: RLBatch  # B prompts with their reference images, on the host
    group_size: int  # G
    completion_ids: Optional[torch.Tensor] = None  # [N, L] host, pad after EOS, once every chunk is sampled
    completion_mask: Optional[torch.Tensor] = None  # [N, L] host, 1 up to and including EOS
    sampler_logp: Optional[torch.Tensor] = None  # [N, L] host, the sampler's log-prob of each token (None: greedy)
    texts: list[str] = field(default_factory=list)  # [N] decoded answers, filled chunk by chunk
    scorer: Optional[Scorer] = None  # scores each chunk on its own thread as its renders come back
    pending: list[tuple[int, ProgramRenders, Future]] = field(default_factory=list)  # (first row, renders, -> Scored) per chunk
    renders: list = field(default_factory=list)  # [N] RenderResult, in row order once scored
    codes: list[Optional[str]] = field(default_factory=list)  # [N] extracted code, None without a fenced block
    render_jobs: int = 0  # distinct programs sent to the renderers (repeats render once)
    rewards: Optional[RewardParts] = None  # [N] each part, once every chunk is scored
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per phase
    render_started: Optional[float] = None  # perf_counter of the first submit

    @property
    def num_prompts(self) -> int:
        return len(self.batch.images)

    @property
    def num_rows(self) -> int:
        return len(self.texts)

    @property
    def languages(self) -> list[str]:
        """[N] target language of each row."""
        return [lang for lang in self.batch.languages for _ in range(self.group_size)]

    @property
    def references(self) -> list:
        """[N] the reference image of each row (the same object G times per prompt)."""
        return [image for image in self.batch.images for _ in range(self.group_size)]

    def inputs(self, rows: list[int], device) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """Model inputs of prompt + completion for `rows`, on `device`: (inputs, ids [n, L], mask [n, L])."""
        return sequence_inputs(self.batch, self.group_size, self.completion_ids, self.completion_mask, rows, device)


def join_completions(chunks: list[tuple], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Per-chunk (ids [n, L_k], mask [n, L_k], sampler log-probs [n, L_k] | None) -> ([N, L], [N, L],
    [N, L] | None), right-padded to the longest (pad, mask 0, log-prob 0); None if any chunk has none."""
    length = max(ids.shape[1] for ids, _, _ in chunks)

    def joined(index: int, value) -> torch.Tensor:
        return torch.cat([torch.nn.functional.pad(part[index], (0, length - part[index].shape[1]), value=value) for part in chunks])

    logp = None if any(part[2] is None for part in chunks) else joined(2, 0.0)
    return joined(0, pad_id), joined(1, 0), logp


def sequence_inputs(batch: RLBatch, group_size: int, ids: torch.Tensor, mask: torch.Tensor, rows: list[int], device):
    """Model inputs for prompt + completion of the given rollout rows, on `device`.

    `ids`, `mask`: [N, L] completions of the whole rollout (host). Returns (inputs, ids [n, L],
    mask [n, L]), all on `device`; only these n rows are copied there.
    """
    prompts = [r // group_size for r in rows]
    index = torch.tensor(rows, device=ids.device)
    ids, mask = ids.index_select(0, index), mask.index_select(0, index)  # [n, L]
    inputs = with_completion(trim_left_padding(rows_of(batch.inputs, prompts)), ids, mask)  # [n, P + L]
    return to_device(inputs, device), ids.to(device), mask.to(device)
