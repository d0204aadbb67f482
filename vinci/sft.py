"""Supervised fine-tuning: cross-entropy on the answer tokens only, through LoRA/QLoRA.

The batch's labels already hold -100 on prompt, image and padding tokens (vinci.data.collate),
so the loss is the shifted cross-entropy averaged over answer tokens: the model's own `labels=`
loss, computed with only answer positions going through the LM head, in chunks. Both kinds
of VinciCoder SFT rows (direct generation, visual code refinement) are just prompts and
answers here. Gradient accumulation, clipping and precision are the Trainer's settings.
"""

from __future__ import annotations

import time
from typing import Optional

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from vinci.backbone import Backbone
from vinci.data.collate import IGNORE, SFTBatch
from vinci.logprobs import DEFAULT_CHUNK, answer_loss
from vinci.module import BackboneModule


class SFTModule(BackboneModule):
    def __init__(
        self,
        backbone: Backbone,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: Optional[LRSchedulerCallable] = None,
        warmup_ratio: float = 0.05,
        min_lr_ratio: float = 0.1,
        vision_lr_scale: float = 1.0,
        show_samples: int = 0,
        sample_max_new_tokens: int = 256,
        head_chunk: int = DEFAULT_CHUNK,
    ):
        """
        Args:
            backbone: model, adapter and LoRA/QLoRA settings.
            optimizer: optimizer over the trainable (LoRA) parameters.
            scheduler: learning-rate scheduler; default linear warmup then cosine, per step.
            warmup_ratio: share of all optimizer steps spent warming up (default schedule).
            min_lr_ratio: final learning rate as a share of the peak (default schedule).
            vision_lr_scale: the vision tower's learning rate as a share of the optimizer's.
            show_samples: after each validation, greedy-decode this many validation prompts and log the text.
            sample_max_new_tokens: length cap of those samples.
            head_chunk: answer positions per LM-head call; peak head memory is a few
                [head_chunk, vocab] float32 tensors.
        """
        super().__init__(backbone, optimizer, scheduler, warmup_ratio, min_lr_ratio, vision_lr_scale)
        self.save_hyperparameters()
        self.show_samples = show_samples
        self.sample_max_new_tokens = sample_max_new_tokens
        self.head_chunk = head_chunk
        self._step_started = None
        self._shown = []

    def _common_step(self, batch: SFTBatch, stage: str) -> torch.Tensor:
        if not isinstance(batch, SFTBatch):
            raise TypeError(f"SFTModule needs SFT batches, got {type(batch).__name__}: set data.stage: sft")
        # the model's own labels= loss, without its [B, T, V] logits (vinci.logprobs)
        loss, answer_tokens = answer_loss(self.model, batch.inputs, batch.labels, IGNORE, self.head_chunk)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=batch.labels.shape[0], sync_dist=stage != "train")
        if stage == "train":
            self.log("train/answer_tokens", float(answer_tokens), reduce_fx="sum", on_step=True, on_epoch=False)
        return loss

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self._step_started = time.perf_counter()

    def training_step(self, batch: SFTBatch, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "train")

    def on_train_batch_end(self, outputs, batch: SFTBatch, batch_idx: int) -> None:
        seconds = time.perf_counter() - self._step_started
        tokens = float(batch.inputs["attention_mask"].sum())
        self.log("train/tokens_per_s", tokens / max(seconds, 1e-9), on_step=True, on_epoch=False)
        optimizer = self.trainer.optimizers[0] if self.trainer.optimizers else None
        if optimizer is not None:
            self.log("train/lr", optimizer.param_groups[0]["lr"], on_step=True, on_epoch=False)

    def validation_step(self, batch: SFTBatch, batch_idx: int) -> torch.Tensor:
        loss = self._common_step(batch, "val")
        if batch_idx == 0 and self.show_samples:
            self._log_samples(batch)
        return loss

    def test_step(self, batch: SFTBatch, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "test")

    def _log_samples(self, batch: SFTBatch) -> None:
        """Greedy-decode the first validation prompts and write prompt/answer text to the logger."""
        from vinci.generation import sample
        from vinci.inputs import rows_of

        n = min(self.show_samples, batch.labels.shape[0])
        texts = []
        for row in range(n):
            answer_start = int((batch.labels[row] != -100).nonzero()[0])
            inputs = rows_of(batch.inputs, [row])  # this row with its own image patches
            for key, value in inputs.items():  # keep only the prompt of per-token tensors
                if torch.is_tensor(value) and value.shape[:2] == (1, batch.labels.shape[1]):
                    inputs[key] = value[:, :answer_start]
            done = sample(self.model, self.processor, inputs, do_sample=False, max_new_tokens=self.sample_max_new_tokens)
            texts.append(f"**sample {row}**\n\n```\n{done.texts[0]}\n```")
        experiment = getattr(self.logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_text"):
            experiment.add_text("val/samples", "\n\n".join(texts), self.global_step)
