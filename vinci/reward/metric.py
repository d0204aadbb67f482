"""`PatchSimilarity`: the coarse-to-fine visual reward as a torchmetrics Metric.

`update(renders, references, languages=None)` scores each render against its reference with
`vinci.reward.similarity.visual_reward` (a failed render, None, scores 0) and adds the scores to
sum/count states; `compute()` is their mean. All states reduce with "sum", so the per-process
halves of a DDP run merge into the whole. With `per_language=True` it also keeps per-language
sums, counts and failure counts (`language_summary()`), which the reward logger reads.

GRPO needs the per-sample scores too: `score(...)` returns them and accumulates the same batch,
so each render is encoded once per step.

The encoder is a name ("pixel", "timm:<model>", built for this metric) or an encoder object;
`encoder_options` (e.g. the weights file) builds a named one with options. It is held outside
the module registry: it follows the metric's device (`.to()`), but its weights are neither
parameters of the LightningModule nor part of its checkpoint.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from PIL import Image
from torchmetrics import Metric

from vinci.reward.encoders import CropEncoder, build_encoder
from vinci.reward.similarity import check_options, visual_reward
from vinci.tasks import LANGUAGES, canonical


class PatchSimilarity(Metric):
    """Mean coarse-to-fine similarity of renders to their references (failed renders count as 0)."""

    higher_is_better = True
    is_differentiable = False
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(
        self,
        encoder: str | CropEncoder = "pixel",
        *,
        tile_size: int = 448,
        max_tiles: int = 12,
        global_weight: float | None = None,
        batch_size: int = 64,
        per_language: bool = False,
        encoder_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_options(tile_size, max_tiles, global_weight, batch_size)
        if not isinstance(encoder, (str, torch.nn.Module)):
            raise ValueError(f"encoder must be a name or an encoder object, got {type(encoder).__name__}")
        # A name builds this metric's own encoder, never the process-wide one that functional
        # callers share: moving the metric to a device (or a dtype) moves only its own encoder.
        built = build_encoder(encoder, **(encoder_options or {}))  # e.g. {"weights": "dinov2_vitl14.safetensors"}
        # object.__setattr__ keeps the encoder out of the module tree (no params, no checkpoint).
        object.__setattr__(self, "_encoder", built)
        self.options = dict(
            tile_size=tile_size, max_tiles=max_tiles, global_weight=global_weight, batch_size=batch_size
        )
        self.per_language = per_language
        self.languages = LANGUAGES
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("failed", torch.tensor(0), dist_reduce_fx="sum")
        if per_language:
            n = len(self.languages)
            self.add_state("language_total", torch.zeros(n), dist_reduce_fx="sum")
            self.add_state("language_count", torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
            self.add_state("language_failed", torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")

    @property
    def encoder(self) -> CropEncoder:
        return self._encoder

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        device = fn(torch.zeros(0)).device  # follow devices only; the encoder chooses its dtype
        current = next(iter([*self._encoder.parameters(), *self._encoder.buffers()]), None)
        if current is not None and current.device != device:
            place = getattr(self._encoder, "place", None)  # TimmEncoder: bf16 weights off the CPU
            place(device) if place is not None else self._encoder.to(device)
        return out

    def _language_index(self, languages: Sequence[str] | None, n: int) -> torch.Tensor | None:
        if languages is None:
            if self.per_language:
                raise ValueError("per_language=True needs the language of every render")
            return None
        if len(languages) != n:
            raise ValueError(f"got {n} renders but {len(languages)} languages")
        return torch.tensor([self.languages.index(canonical(lang)) for lang in languages], device=self.device)

    def update(
        self,
        renders: Sequence[Image.Image | None],
        references: Sequence[Image.Image],
        languages: Sequence[str] | None = None,
        scores: torch.Tensor | None = None,
    ) -> None:
        """Add a batch. `scores` ([N], from `score`) skips re-encoding renders already scored."""
        if len(renders) != len(references):
            raise ValueError(f"got {len(renders)} renders but {len(references)} references")
        index = self._language_index(languages, len(renders))  # [N] or None
        if scores is None:
            scores = visual_reward(renders, references, self._encoder, **self.options)
        elif scores.shape != (len(renders),):
            raise ValueError(f"scores must have shape ({len(renders)},), got {tuple(scores.shape)}")
        failed = torch.tensor([r is None for r in renders], device=self.device)  # [N]
        scores = scores.to(self.device, torch.float32).masked_fill(failed, 0.0)  # [N]
        self.total += scores.sum()
        self.count += len(renders)
        self.failed += failed.sum()
        if self.per_language and index is not None:
            self.language_total.index_add_(0, index, scores)
            self.language_count.index_add_(0, index, torch.ones_like(index))
            self.language_failed.index_add_(0, index, failed.long())

    def compute(self) -> torch.Tensor:
        """Mean score over everything seen (nan before any update)."""
        return self.total / self.count

    def score(
        self,
        renders: Sequence[Image.Image | None],
        references: Sequence[Image.Image],
        languages: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """Per-sample scores [N] (0 for failed renders) for GRPO; the batch is also accumulated."""
        scores = visual_reward(renders, references, self._encoder, **self.options)  # [N]
        self.update(renders, references, languages, scores=scores)
        return scores

    def language_summary(self) -> dict[str, torch.Tensor]:
        """`{lang}/score`, `{lang}/fail_rate`, `{lang}/count` for languages seen (synced in DDP)."""
        if not self.per_language:
            raise ValueError("language_summary needs PatchSimilarity(per_language=True)")
        with self.sync_context(should_sync=self.sync_on_compute, should_unsync=True):
            out = {}
            for i, lang in enumerate(self.languages):
                count = self.language_count[i]
                if count > 0:
                    out[f"{lang}/score"] = self.language_total[i] / count
                    out[f"{lang}/fail_rate"] = self.language_failed[i].float() / count
                    out[f"{lang}/count"] = count.clone()
            return out
