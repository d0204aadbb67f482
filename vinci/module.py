"""What the SFT and ViRL modules share: the adapted backbone, its optimizer, lean checkpoints.

- The backbone is loaded in `configure_model`, inside the strategy's context, so FSDP or a
  meta-device init can wrap it; the embedded tiny model is built in `prepare_data`.
- Checkpoints hold only the trainable (LoRA) tensors, not the frozen base: a 7B base would
  otherwise add 15 GB to every checkpoint. Resuming reloads the base from `backbone.model` and
  the rest from the checkpoint (`strict_loading = False` lets the base keys be absent).
- The optimizer is injected (`OptimizerCallable`); the default schedule is linear warmup then
  cosine decay, stepped per optimizer step.
"""

from __future__ import annotations

import math
from typing import Optional

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from vinci.backbone import Backbone, ensure_model, load_backbone, trainable_split


def warmup_cosine(optimizer, total_steps: int, warmup_ratio: float, min_lr_ratio: float = 0.0):
    """LambdaLR: linear warmup over warmup_ratio of the steps, then cosine down to min_lr_ratio."""
    warmup = max(1, int(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class BackboneModule(L.LightningModule):
    def __init__(
        self,
        backbone: Backbone,
        optimizer: OptimizerCallable,
        scheduler: Optional[LRSchedulerCallable] = None,
        warmup_ratio: float = 0.05,
        min_lr_ratio: float = 0.1,
        vision_lr_scale: float = 1.0,
    ):
        super().__init__()
        if vision_lr_scale <= 0:
            raise ValueError(f"vision_lr_scale must be > 0, got {vision_lr_scale}")
        self.backbone = backbone
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.warmup_ratio = warmup_ratio
        self.min_lr_ratio = min_lr_ratio
        self.vision_lr_scale = vision_lr_scale
        self.model = None  # peft.PeftModel, set in configure_model
        self.processor = None
        self.strict_loading = False  # checkpoints carry only the trainable tensors
        self.trains = True  # False: the backbone loads for inference only (evaluation)

    def prepare_data(self) -> None:
        ensure_model(self.backbone)

    def configure_model(self) -> None:
        if self.model is None:
            # Inside fit/validate/test, Lightning sets `self.device` to the strategy's root device
            # before this hook (call._call_setup_hook), although the module moves there later.
            self.model, self.processor = load_backbone(self.backbone, trainable=self.trains, device=self.device)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def parameter_groups(self) -> list[dict]:
        """Trainable parameters as optimizer groups: the language side, then the vision tower
        (when any of it trains), whose learning rate `configure_optimizers` scales."""
        language, vision = trainable_split(self.model)
        return [{"params": language}] + ([{"params": vision, "name": "vision"}] if vision else [])

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameter_groups())
        for group in optimizer.param_groups:  # before the scheduler reads each group's base lr
            if group.get("name") == "vision":
                group["lr"] *= self.vision_lr_scale
        if self.scheduler_factory is not None:
            scheduler = self.scheduler_factory(optimizer)
        else:
            total = max(1, int(self.trainer.estimated_stepping_batches))
            scheduler = warmup_cosine(optimizer, total, self.warmup_ratio, self.min_lr_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.model is None:
            self.configure_model()
        expected = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
        missing = expected - set(checkpoint["state_dict"])
        if missing:
            raise KeyError(
                f"checkpoint lacks {len(missing)} trainable tensors (e.g. {sorted(missing)[0]}): "
                "was it written with other LoRA settings?"
            )
