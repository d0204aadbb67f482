"""vinci's command line: a LightningCLI over the SFT and ViRL modules and the data module.

    python main.py fit --config configs/sft.yaml
    python main.py fit --config configs/virl.yaml
    python main.py fit --config configs/sft.yaml --trainer.max_steps 50   # override any key
    python main.py fit --config configs/sft.yaml --print_config           # the full resolved config
"""

from __future__ import annotations

import logging

from lightning.pytorch.cli import LightningCLI

from vinci.data.datamodule import VinciDataModule
from vinci.module import BackboneModule


class VinciCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # The data module tokenises with the model's own processor: one key, linked once.
        parser.link_arguments("model.init_args.backbone.model", "data.processor")


def cli_main(args=None, run: bool = True) -> VinciCLI:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return VinciCLI(
        BackboneModule,
        VinciDataModule,
        subclass_mode_model=True,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    cli_main()
