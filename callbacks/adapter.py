"""Export the LoRA adapter in standard PEFT format at every checkpoint and at the end of fit.

The directory holds `adapter_config.json`, `adapter_model.safetensors` and the processor, so
`PeftModel.from_pretrained(base, dirpath)` and `AutoProcessor.from_pretrained(dirpath)` load it
with no vinci code. The ViRL stage starts from the directory the SFT stage writes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

from vinci.backbone import save_adapter

log = logging.getLogger(__name__)


class AdapterExport(L.Callback):
    def __init__(self, dirpath: str = "runs/sft/adapter"):
        """
        Args:
            dirpath: where the adapter and processor are written (overwritten each time).
        """
        self.dirpath = Path(dirpath)

    def _export(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero and module.model is not None:
            save_adapter(module.model, module.processor, self.dirpath)

    def on_save_checkpoint(self, trainer, module, checkpoint) -> None:
        self._export(trainer, module)

    def on_fit_end(self, trainer, module) -> None:
        self._export(trainer, module)
        if trainer.is_global_zero:
            log.info("adapter written to %s", self.dirpath)
