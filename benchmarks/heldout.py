"""Held-out format rate, render rate and visual reward per domain, for one or more adapters.

    python -m benchmarks.heldout                                   # the SFT adapter of configs/sft.yaml
    python -m benchmarks.heldout --adapters sft=runs/sft/adapter virl=runs/virl/adapter
    python -m benchmarks.heldout --adapters virl=runs/virl/adapter --samples 4 --temperature 0.7
    python -m benchmarks.heldout --adapters base=                  # an empty path: the base model alone

Each adapter is evaluated by `main.py predict --config configs/eval.yaml`, run in-process with
Lightning's progress bar, on the rows given (by default the synthetic corpus's held-out RL
split): greedy decoding (or K sampled answers per prompt, averaged per prompt), code extracted,
rendered in the sandboxed pool with the render options of the rows' reference images, and
scored with the training reward (0.9 visual + 0.1 format, pixel encoder). Everything predict
writes stays under --out: NAME/predictions.jsonl, NAME/renders, NAME/report.html, and the
config each run was given, configs/NAME.yaml (`python main.py predict --config` on it reruns
it). The table is `vinci.eval.report.summarise` of those predictions, the same per-domain means
report.html shows.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path
from typing import Optional

from benchmarks.reproduce import callback_configs, load, retarget, write_config
from vinci.eval.compare import average_runs, format_table
from vinci.eval.records import Prediction
from vinci.eval.report import summarise

log = logging.getLogger(__name__)


def reference_render_options(rows_path: Path):
    """The options the rows' reference images were rendered with, so answers render alike: the
    corpus manifest's when the rows sit in a synthetic corpus, else the defaults (None). A
    manifest this code cannot read (another corpus version) is an error, not a silent default."""
    from vinci.data.synth import read_manifest
    from vinci.data.synth.corpus import MANIFEST, VERSION
    from vinci.render import RenderOptions

    manifest = read_manifest(rows_path.parent)
    if manifest is None and (rows_path.parent / MANIFEST).is_file():
        raise ValueError(
            f"{rows_path.parent / MANIFEST} is not a version-{VERSION} corpus manifest, so the render "
            f"options of {rows_path.name}'s reference images are unknown: rebuild the corpus "
            f"(python -m vinci.data.synth --out {rows_path.parent}) or run SFT, which rebuilds it"
        )
    return RenderOptions(**manifest["render_options"]) if manifest else None


def eval_config(out: Path, name: str, adapter: Optional[str], model: str, rows: str, max_new_tokens: int = 400,
                limit: int = 0, workers: int = 2, render_options=None, do_sample: bool = False,
                temperature: float = 1.0, seed: int = 0) -> dict:
    """configs/eval.yaml evaluating `adapter` (None: the base model) on the RL rows file `rows`,
    with every output under out/name."""
    config = retarget(load("eval"), out, name)
    config["trainer"]["logger"] = False  # predict logs no metrics; its resolved config.yaml lands in out/name
    init = config["model"]["init_args"]
    init["backbone"].update(model=model, adapter=adapter or None, embedded=False)  # the trained base must exist
    init.update(max_new_tokens=max_new_tokens, workers=workers, do_sample=do_sample, temperature=temperature, seed=seed,
                render_options=render_options.to_dict() if render_options is not None else None)
    config["data"].update(synthetic=None, benchmark={"dir": str(rows), "kind": "rows", "limit": limit or None})
    return config


def predict(config: dict, path: Path) -> list[Prediction]:
    """Write `config` to `path`, run `main.py predict --config path` in-process, and read back
    what its PredictionWriter wrote."""
    from callbacks.predictions import merged_predictions
    from main import cli_main

    with warnings.catch_warnings():
        # LightningCLI warns when it gets `args` while sys.argv has arguments too; those are this
        # script's own (--adapters ...), which the CLI never reads.
        warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")
        cli_main(["predict", "--config", str(write_config(config, path))])
    (writer,) = [c for c in callback_configs(config) if c["class_path"].endswith("PredictionWriter")]
    return merged_predictions(Path(writer["init_args"]["output_dir"]))


def run(adapters: dict[str, str], model: str, rows_path: str, max_new_tokens: int, limit: int, workers: int, samples: int = 0,
        temperature: float = 1.0, out: str = "runs/heldout"):
    """Evaluate each adapter; samples=0 decodes greedily, samples=K averages K answers sampled at
    `temperature` per prompt (seeds 0..K-1). Returns (name -> predictions, name -> summarise table)."""
    out_dir = Path(out).resolve()
    options = reference_render_options(Path(rows_path))
    settings = dict(model=model, rows=rows_path, max_new_tokens=max_new_tokens, limit=limit, workers=workers,
                    render_options=options)
    results, tables = {}, {}
    for name, adapter in adapters.items():
        started = time.perf_counter()
        if samples:
            runs = []
            for k in range(samples):
                run_name = f"{name}-sample{k}"
                config = eval_config(out_dir, run_name, adapter, do_sample=True, temperature=temperature, seed=k, **settings)
                runs.append(predict(config, out_dir / "configs" / f"{run_name}.yaml"))
            results[name] = average_runs(runs)
        else:
            results[name] = predict(eval_config(out_dir, name, adapter, **settings), out_dir / "configs" / f"{name}.yaml")
        tables[name] = summarise(results[name])
        log.info("%s evaluated in %.0f s; report: %s", name, time.perf_counter() - started,
                 out_dir / (f"{name}-sample0" if samples else name) / "report.html")
    return results, tables


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters", nargs="+", default=["sft=runs/sft/adapter"], help="NAME=DIR pairs; an empty DIR is the base model")
    parser.add_argument("--model", default="artifacts/tiny-vlm")
    parser.add_argument("--rows", default="artifacts/synth/rl_test.jsonl", help="RL-schema rows to evaluate on")
    parser.add_argument("--max-new-tokens", type=int, default=400)
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N rows")
    parser.add_argument("--workers", type=int, default=2, help="render processes")
    parser.add_argument("--samples", type=int, default=0, help="0: greedy; K: mean of K sampled answers per prompt")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature with --samples")
    parser.add_argument("--out", default="runs/heldout", help="where each run's predictions, renders, report and config go")
    args = parser.parse_args(argv)  # logging is set up by cli_main, as for `main.py predict`
    adapters = dict(pair.split("=", 1) if "=" in pair else (pair, pair) for pair in args.adapters)
    for name, adapter in adapters.items():
        if adapter and not Path(adapter).exists():
            parser.error(f"no adapter at {adapter} for {name}: run its training stage first")
    if not Path(args.rows).exists():
        parser.error(f"no rows at {args.rows}: run configs/sft.yaml first (it builds the synthetic corpus)")
    _, tables = run(adapters, args.model, args.rows, args.max_new_tokens, args.limit, args.workers, args.samples,
                    args.temperature, args.out)
    print(format_table(tables))


if __name__ == "__main__":
    main()
