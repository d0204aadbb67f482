"""vinci's command line: a LightningCLI over the SFT, ViRL and evaluation modules and the data module.

    vinci fit --config configs/sft.yaml                        # or: python main.py fit ...
    vinci fit --config configs/virl.yaml --sampler.temperature 0.8 --render.workers 8
    vinci fit --config configs/sft.yaml --print_config         # the full resolved config
    vinci export --adapter runs/virl/adapter --out runs/virl/merged

Every callback a stage uses is a named config group, so each of its settings has one address
(`--sampler.num_samples 8`). A stage leaves out the groups it does not use. The ViRL step calls
its pipeline callbacks in its own order (vinci.virl), so the order of GROUPS does not matter.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from typing import Optional

from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO

from callbacks.adapter import AdapterExport
from callbacks.predictions import PredictionWriter
from callbacks.render import RenderRollouts
from callbacks.reward_logger import RewardLogger
from callbacks.rollout import RolloutSampler
from callbacks.run_lock import RunLock
from vinci.checkpoint_io import LocalAtomicCheckpointIO
from vinci.data.datamodule import VinciDataModule
from vinci.module import BackboneModule

GROUPS = (  # config key -> callback
    ("sampler", RolloutSampler),  # ViRL: G samples per prompt
    ("render", RenderRollouts),  # ViRL: renders them in the sandboxed pool
    ("reward_log", RewardLogger),  # ViRL: rewards, image grids and code to TensorBoard
    ("checkpoint", ModelCheckpoint),
    ("adapter", AdapterExport),
    ("lr_monitor", LearningRateMonitor),
    ("predictions", PredictionWriter),  # predict: predictions.jsonl, renders and the report
)
SUBCLASS_KEYS = ("model",) + tuple(key for key, _ in GROUPS)
NULLS = ("null", "none", "~")


class VinciCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        for key, callback in GROUPS:
            parser.add_lightning_class_args(callback, key, subclass_mode=True, required=False)
        # The data module tokenises with the model's own processor; log-probs use the sampling
        # temperature. Each is set once and linked.
        parser.link_arguments("model.init_args.backbone.model", "data.processor")
        parser.link_arguments("sampler.init_args.temperature", "model.init_args.temperature")

    def _instantiate_trainer(self, config: dict, callbacks: list):
        callbacks = [c for c in callbacks if c is not None]  # groups a stage leaves out are None
        if self.subcommand == "fit":
            callbacks.append(RunLock())
        trainer = super()._instantiate_trainer(config, callbacks)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # Lightning's default: staged in /tmp
            trainer.strategy.checkpoint_io = LocalAtomicCheckpointIO()
        return trainer


def nested_nulls(args: list[str]) -> list[str]:
    """Rewrite `--model.init_args.a.b null` as `--model.init_args '{"a": {"b": null}}'`.

    jsonargparse (4.53) re-parses a value nested inside a subclass group's init_args as text, so
    `null` there arrives as the string "None". The dict form is merged into the earlier value
    key by key, and keeps the null.
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        key, value, used = arg, None, 1
        if arg.startswith("--") and "=" in arg:
            key, value = arg.split("=", 1)
        elif arg.startswith("--") and i + 1 < len(args):
            value, used = args[i + 1], 2
        parts = key[2:].split(".") if key.startswith("--") else []
        if value is not None and value.lower() in NULLS and len(parts) > 1 and parts[0] in SUBCLASS_KEYS:
            path = parts[2:] if parts[1] == "init_args" else parts[1:]
            if path:
                nested: Optional[dict] = None
                for name in reversed(path):
                    nested = {name: nested}
                out += [f"--{parts[0]}.init_args", json.dumps(nested)]
                i += used
                continue
        out.append(arg)
        i += 1
    return out


class DropTip(logging.Filter):
    """Lightning's advert for its cloud logger, printed at every start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_console() -> None:
    """Keep the console for messages a user can act on."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):  # rank_zero_info's
        rank_zero = logging.getLogger(name)
        if not any(isinstance(f, DropTip) for f in rank_zero.filters):
            rank_zero.addFilter(DropTip())
    # ViRL steps its optimizer itself, so Lightning warns that a checkpoint holds the weights
    # after that step, with a code sample; that is what a ViRL checkpoint should hold.
    warnings.filterwarnings("ignore", message=r"Using ModelCheckpoint with manual optimization")
    # ViRL keeps its rollout batch in host memory by overriding the module's transfer hook, on
    # purpose; Lightning notes that the module's hook wins over the data module's.
    warnings.filterwarnings("ignore", message=r"You have overridden `transfer_batch_to_device` in `LightningModule`")
    # Lightning 2.6 calls a torch.utils._pytree API that torch 2.14 deprecates, at every step.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")


class ParseOnly(VinciCLI):
    def instantiate_classes(self) -> None:  # the config alone: no model, data or trainer
        pass


def parse_config(args: list[str]):
    """The resolved config (a jsonargparse Namespace) that `args`, given without a subcommand,
    would run with; nothing is built."""
    cli = ParseOnly(BackboneModule, VinciDataModule, subclass_mode_model=True, args=nested_nulls(args), run=False)
    return cli.config


ALLOCATOR = "expandable_segments:True"


def default_allocator() -> str:
    """Set PYTORCH_CUDA_ALLOC_CONF to expandable segments unless the user set it; the value in force.

    The KV cache grows one token at a time (2,048 times an answer), each step a slightly larger
    block than the one it frees; fixed-size segments keep the freed slivers as reserved, unusable
    memory, while an expandable segment grows in place (PyTorch "CUDA memory management" notes).
    It only counts before CUDA initialises, so `cli_main` calls this first.
    """
    return os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", ALLOCATOR)


def cli_main(args: Optional[list[str]] = None, run: bool = True):
    """The `fit | validate | test | predict` CLI, or `export` (merge an adapter into its base)."""
    default_allocator()
    from_argv = args is None
    args = list(sys.argv[1:] if from_argv else args)
    quiet_console()
    if args[:1] == ["export"]:
        from vinci.export import export_main

        return export_main(args[1:])
    if from_argv:  # Lightning warns when given args while sys.argv has some: rewrite argv itself
        sys.argv[1:] = nested_nulls(args)
    return VinciCLI(
        BackboneModule,
        VinciDataModule,
        subclass_mode_model=True,
        args=None if from_argv else nested_nulls(args),
        run=run,
        save_config_kwargs={"overwrite": True},
    )


def main() -> None:
    """The `vinci` console script: a bad data row ends the run with its message, not a traceback."""
    from vinci.data.errors import BadRowError

    try:
        cli_main()
    except BadRowError as err:
        raise SystemExit(f"error: {err}") from None
