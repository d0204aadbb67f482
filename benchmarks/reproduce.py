"""Reproduce the paper-style table on the embedded default: SFT -> ViRL -> test, with the reward ablation.

    python -m benchmarks.reproduce                           # everything from scratch (about an hour on 2 CPU cores)
    python -m benchmarks.reproduce --sft-adapter runs/sft/adapter   # reuse a finished SFT run
    python -m benchmarks.reproduce --virl-steps 24 --limit 96        # a smaller budget, same comparison

Stages, each the real command a user runs, with configs derived from configs/*.yaml and saved
under --out/configs so every number can be traced back to the exact settings:

1. SFT: configs/sft.yaml (skipped with --sft-adapter).
2. ViRL three times from the same SFT adapter, with the same seed, steps and batches; only the
   visual reward differs:
     coarse-to-fine  uniform over the global thumbnail and the local tiles (the paper)
     coarse-only     the thumbnail alone (global_weight 1)
     fine-only       the tiles alone (global_weight 0)
3. test: `main.py predict --config configs/eval.yaml` for the SFT adapter and each ViRL adapter
   on the synthetic held-out split (greedy), which also writes each run's report.html.

The table gives every score's mean with its 95% bootstrap interval, and for each ViRL run the
paired difference in reward against SFT-only with its interval (`vinci.eval.compare`, the same
bootstrap as benchmarks.virl_gain).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import yaml

from vinci.eval.compare import bootstrap_diff, bootstrap_mean, paired
from vinci.eval.records import read_predictions

ROOT = Path(__file__).resolve().parents[1]  # where main.py and configs/ are

VARIANTS = {  # name -> global_weight of the visual reward
    "virl-c2f": None,
    "virl-coarse": 1.0,
    "virl-fine": 0.0,
}
SCORES = ("format", "render", "visual", "ssim", "reward")


def callback_configs(config: dict) -> list[dict]:
    """Every callback entry of a config: its named groups (`predictions:`, `adapter:`, ...,
    each a dict with a class_path) and whatever `trainer.callbacks` still lists."""
    named = [value for key, value in config.items()
             if key not in ("model", "data", "trainer") and isinstance(value, dict) and "class_path" in value]
    listed = config.get("trainer", {}).get("callbacks") or []
    return named + ([listed] if isinstance(listed, dict) else list(listed))


def retarget(config: dict, out: Path, name: str) -> dict:
    """Point every output path of a config (training or eval) at out/name."""
    run_dir = out / name
    config["trainer"]["default_root_dir"] = str(run_dir)
    config["trainer"]["logger"]["init_args"].update(save_dir=str(out), name=name)
    for callback in callback_configs(config):
        args = callback.setdefault("init_args", {})
        kind = callback["class_path"].rsplit(".", 1)[-1]
        if kind == "ModelCheckpoint":
            args["dirpath"] = str(run_dir / "checkpoints")
        elif kind == "AdapterExport":
            args["dirpath"] = str(run_dir / "adapter")
        elif kind == "RewardLogger":
            args["export_dir"] = str(run_dir / "grids")
        elif kind == "PredictionWriter":
            args.update(output_dir=str(run_dir), overwrite=True)  # this script owns its output folders
    return config


def write_config(config: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run(subcommand: str, config: Path, log: Path) -> float:
    """Run `main.py SUBCOMMAND --config CONFIG`, output to LOG; raise with the log's tail on failure."""
    started = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call([sys.executable, str(ROOT / "main.py"), subcommand, "--config", str(config)], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    if code != 0:
        tail = "".join(open(log).readlines()[-20:])
        raise SystemExit(f"`main.py {subcommand} --config {config}` failed ({code}); see {log}:\n{tail}")
    return time.perf_counter() - started


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())


def virl_config(out: Path, name: str, sft_adapter: str, steps: int = 0) -> dict:
    """configs/virl.yaml from the given SFT adapter, writing under out/name, with the variant's reward mix."""
    config = retarget(load("virl"), out, name)
    config["model"]["init_args"]["backbone"]["adapter"] = sft_adapter
    config["model"]["init_args"]["global_weight"] = VARIANTS[name]
    if steps:
        config["trainer"]["max_steps"] = steps
    return config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/reproduce", help="where runs, configs, logs and reports go")
    parser.add_argument("--sft-adapter", default=None, help="reuse this SFT adapter instead of training one")
    parser.add_argument("--virl-steps", type=int, default=0, help="ViRL steps per variant; 0 = configs/virl.yaml's")
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N held-out prompts (rounded up to whole batches)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args(argv)
    out = (ROOT / args.out).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    seconds = {}

    sft_adapter = args.sft_adapter
    if sft_adapter is None:
        config = write_config(retarget(load("sft"), out, "sft"), out / "configs" / "sft.yaml")
        seconds["sft"] = run("fit", config, out / "logs" / "sft.log")
        sft_adapter = str(out / "sft" / "adapter")
    sft_adapter = str(Path(sft_adapter).resolve())

    adapters = {"sft": sft_adapter}
    for name in args.variants:
        config = virl_config(out, name, sft_adapter, args.virl_steps)
        seconds[name] = run("fit", write_config(config, out / "configs" / f"{name}.yaml"), out / "logs" / f"{name}.log")
        adapters[name] = str(out / name / "adapter")

    results = {}
    for name, adapter in adapters.items():
        config = retarget(load("eval"), out, f"test-{name}")
        config["model"]["init_args"]["backbone"]["adapter"] = adapter
        if args.limit:
            batches = -(-args.limit // config["data"]["batch_size"])  # whole batches: rounds up
            config.setdefault("trainer", {})["limit_predict_batches"] = batches
        seconds[f"test-{name}"] = run("predict", write_config(config, out / "configs" / f"test-{name}.yaml"), out / "logs" / f"test-{name}.log")
        results[name] = read_predictions(out / f"test-{name}" / "predictions.jsonl")

    print(format_results(results))
    print("\nseconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))


def reward_gain(results: dict, name: str, base: str) -> str:
    """Mean paired reward difference name - base over the prompts both answered, with its 95% interval."""
    if name == base or base not in results:
        return "—"
    try:
        mean, low, high = bootstrap_diff(*paired(results[base], results[name]))
    except ValueError as err:
        raise ValueError(f"{name} against {base}: {err}") from err
    return f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]"


def format_results(results: dict) -> str:
    """Markdown table: mean [95% CI] per score; paired reward differences against SFT and,
    for the ablation runs, against coarse-to-fine ViRL."""
    head = "| run | n | " + " | ".join(SCORES) + " | reward − SFT | reward − c2f |"
    lines = [head, "|" + "---|" * (len(SCORES) + 4)]
    for name, predictions in results.items():
        cells = []
        for score in SCORES:
            mean, low, high = bootstrap_mean([p.scores[score] for p in predictions])
            cells.append(f"{mean:.3f} [{low:.3f}, {high:.3f}]")
        against_c2f = reward_gain(results, name, "virl-c2f") if name != "sft" else "—"
        lines.append(f"| {name} | {len(predictions)} | " + " | ".join(cells) + f" | {reward_gain(results, name, 'sft')} | {against_c2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
