"""SFT and ViRL steps on a CUDA GPU: LoRA in bf16 against QLoRA (NF4 base), side by side in one run.

    python -m benchmarks.cuda_steps                  # after configs/sft.yaml (ViRL starts from its adapter)
    python -m benchmarks.cuda_steps --sft-steps 40 --virl-steps 20

Runs configs/sft.yaml and configs/virl.yaml for a few steps in each mode, on the embedded tiny
model, with the trainer on the GPU in bf16-mixed. Prints, per stage and mode: seconds per step
(the first step, which compiles kernels and starts the render workers, is left out), peak GPU
memory, and SFT's last loss or ViRL's mean rollout reward (steps 2..N); for ViRL also seconds
per phase. The tiny model makes these a check of the CUDA and 4-bit paths and of where a step's
time goes, not a measure of what a 7B costs. The first mode in a process also pays CUDA's start-up beyond
its first step (at 30 SFT steps, 1.6 to 2.9 times the s/step of the same mode run second);
compare modes with --modes in both orders. Outputs go to a temporary directory; runs/ is not touched.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]  # where configs/ and runs/ are

QLORA = {"load_in_4bit": True, "quant_type": "nf4", "double_quant": True, "compute_dtype": "bfloat16"}
MODES = {"lora-bf16": None, "qlora-nf4": QLORA}


def stage_config(stage: str, mode: str, steps: int, out: Path) -> Path:
    """configs/<stage>.yaml moved to the GPU in bf16-mixed, its outputs under `out`."""
    import yaml

    from benchmarks.reproduce import retarget, write_config

    name = f"{stage}-{mode}"
    config = retarget(yaml.safe_load((ROOT / "configs" / f"{stage}.yaml").read_text()), out, name)
    config["trainer"].update(accelerator="gpu", precision="bf16-mixed", max_steps=steps, limit_val_batches=0)
    backbone = config["model"]["init_args"]["backbone"]
    backbone["dtype"] = "bfloat16"
    if MODES[mode] is not None:
        backbone["quantization"] = dict(MODES[mode])
    if stage == "sft":
        config["model"]["init_args"]["show_samples"] = 0
    return write_config(config, out / f"{name}.yaml")


def step_times(logdir: Path) -> dict[str, float]:
    """Mean seconds per ViRL phase over the logged steps after the first, from TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    events.Reload()
    out = {}
    for tag in events.Tags()["scalars"]:
        if tag.startswith("time/") or tag == "reward/overall_mean":
            values = [e.value for e in events.Scalars(tag)][1:] or [float("nan")]
            out[tag] = sum(values) / len(values)
    return out


class StepClock(L.Callback):
    """Wall time at the end of each training batch, after the GPU has finished its work."""

    def __init__(self):
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        torch.cuda.synchronize()
        self.ends.append(time.perf_counter())


def run_stage(stage: str, mode: str, steps: int, out: Path) -> dict[str, object]:
    from main import cli_main

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    cli = cli_main(["--config", str(stage_config(stage, mode, steps, out))], run=False)
    clock = StepClock()
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    gaps = [b - a for a, b in zip(clock.ends, clock.ends[1:])]  # steps 2..N
    row: dict[str, object] = {
        "stage": stage,
        "mode": mode,
        "steps": len(clock.ends),
        "s/step": sum(gaps) / len(gaps) if gaps else float("nan"),
        "peak GiB": torch.cuda.max_memory_allocated() / 2**30,
    }
    metrics = cli.trainer.callback_metrics
    if stage == "sft":
        row["last"] = f"loss {float(metrics['train/loss']):.3f}" if "train/loss" in metrics else "-"
    else:
        phases = step_times(Path(cli.trainer.logger.log_dir))
        row["last"] = f"mean reward {phases.pop('reward/overall_mean', float('nan')):.3f}"
        row["phases"] = ", ".join(f"{k[5:-2]} {v:.2f}" for k, v in sorted(phases.items()))
    del cli
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft-steps", type=int, default=30)
    parser.add_argument("--virl-steps", type=int, default=12)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("no CUDA device: this benchmark measures the GPU path")
    if not (ROOT / "runs" / "sft" / "adapter" / "adapter_config.json").is_file():
        parser.error("no SFT adapter at runs/sft/adapter: run python main.py fit --config configs/sft.yaml first")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            rows.append(run_stage("sft", mode, args.sft_steps, Path(tmp)))
            rows.append(run_stage("virl", mode, args.virl_steps, Path(tmp)))
    print(f"\n{torch.cuda.get_device_name()} | torch {torch.__version__}")
    print(f"{'stage':5s} {'mode':10s} {'steps':>5s} {'s/step':>7s} {'peak GiB':>8s}  loss or reward")
    for row in rows:
        print(f"{row['stage']:5s} {row['mode']:10s} {row['steps']:5d} {row['s/step']:7.3f} {row['peak GiB']:8.3f}  {row['last']}")
        if "phases" in row:
            print(f"{'':24s}ViRL seconds per phase: {row['phases']}")


if __name__ == "__main__":
    main()
