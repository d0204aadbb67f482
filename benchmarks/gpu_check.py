"""The first day on a real GPU: each QLoRA recipe's real settings through vinci's own command line.

    python -m benchmarks.gpu_check                                  # Qwen2.5-VL-3B and Qwen3-VL-8B, every phase
    python -m benchmarks.gpu_check --models qwen2.5-vl-3b --phases sft virl --out /tmp/gpu-check
    python -m benchmarks.gpu_check --tiny --out /tmp/gpu-check-tiny # the same script, tiny models, on the CPU

Nothing is downloaded. Each model is built at full size from its released config with random
weights (benchmarks.memory_models.build_model_dir); DINOv2-L gets random weights in a local
Hugging Face cache where vinci's TimmEncoder looks (HF_HUB_CACHE, offline). The data: one
chart of 1,000 image tokens, SFT rows grown to the recipe's max_length, RL rows with a
reference program (benchmarks.gpu_check_data). Then, per model, each phase is one process of
`python -m benchmarks.gpu_check_phase -- <vinci arguments>` (clean peaks, read with
torch.cuda.max_memory_allocated / max_memory_reserved inside it), on a config derived from the
recipe with only these keys changed (`phase_config`):

    sft     configs/recipes/<model>-qlora-sft.yaml, 3 optimizer steps (1 micro-batch each)
    virl    <model>-qlora-virl.yaml from the SFT adapter, 2 steps of one chunk each
            (data.batch_size = sampler.prompts_per_generation: the chunk sets device memory; an
            update of the recipe's 32 prompts takes 32 / chunk times as long), every completion
            max_new_tokens long (sampler min_new_tokens), the first
            answer of each group planted with the reference program so DINOv2-L scores renders
            (gpu_check_phase.PlantAnswers), one validation pass (1 batch) after step 2
    test    `vinci test` with <model>-eval.yaml on 4 prompts, the ViRL adapter
    export  `vinci export` of the ViRL adapter (4-bit base dequantised and merged)
    reward  DINOv2-L alone scoring 8 renders x 13 crops on the GPU

and everything a run writes goes under --out. The table gives seconds, peak allocated and
reserved, the context (used minus reserved), the card total (reserved + context,
benchmarks.memory_budget) and whether it fits a 16 / 24 GB card. Rollout engines: the
transformers one; vLLM runs too once `.venv-vllm` and vinci's vLLM engine exist.

--tiny swaps the models for their families' tiny fixtures (vinci.families) on the CPU, with 1
SFT step, 1 ViRL step of 4 new tokens, 2 test prompts and a tiny timm encoder: the same
script end to end in a few minutes, which is what tests/test_gpu_check.py runs. This script
has NOT yet run on a GPU. Its time there is estimated, not measured: building the two models
(~25 GB written), eight loads and eight generate calls of 2,048 tokens (per model: two ViRL steps,
a validation pass and the test) put it near the 8 minutes it should take; --models and --phases split
it across calls. Disk: the built models, one merged export at a time (removed once written) and
DINOv2-L's 1.2 GB, about 45 GB under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from benchmarks.memory_budget import CARDS, GiB, Allowance, Need

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "configs" / "recipes"
MODELS = ("qwen2.5-vl-3b", "qwen3-vl-8b")
PHASES = ("sft", "virl", "test", "export", "reward")
FAMILY = {"qwen2.5-vl-3b": "qwen2_5_vl", "qwen3-vl-8b": "qwen3_vl"}  # --tiny: vinci.families fixture
DINOV2 = "vit_large_patch14_dinov2.lvd142m"
TINY_ENCODER = "test_vit.r160_in1k"  # timm's test ViT: the same TimmEncoder path in seconds
# rollout engine -> (python, extra vinci arguments) for the ViRL phase. vLLM's entry goes here once
# vinci has the engine (its own interpreter, .venv-vllm/bin/python); `engines` says why it is absent.
ENGINE_RUN = {  # rollout engine -> (interpreter, extra ViRL arguments)
    "transformers": (sys.executable, []),
    # one card: the worker's KV cache is set in bytes and it sleeps (weights to host memory)
    # while the trainer scores and updates; QLoRA recipes sample from the same NF4 base
    "vllm": (sys.executable, ["--sampler.engine=vllm", "--sampler.vllm.kv_cache_gb=4",
                              "--model.init_args.importance_correction=true"]),
}


@dataclass(frozen=True)
class Settings:
    """How much of each phase runs: the GPU check's, or --tiny's on the CPU."""

    tiny: bool = False
    sft_steps: int = 3
    virl_steps: int = 2
    new_tokens: Optional[int] = None  # None: the recipe's max_new_tokens
    test_prompts: int = 4
    encoder: str = DINOV2

    @classmethod
    def for_mode(cls, tiny: bool) -> "Settings":
        return cls(tiny=True, sft_steps=1, virl_steps=1, new_tokens=4, test_prompts=2, encoder=TINY_ENCODER) if tiny else cls()


def phase_overrides(phase: str, model: str, model_dir: Path, paths: dict, run: Path, settings: Settings) -> dict:
    """The keys a phase changes in its recipe: the model, the data, the length of the run, and
    where it writes; with --tiny also the device and the encoder."""
    recipe = yaml.safe_load(recipe_path(model, phase).read_text())
    out = {"model.init_args.backbone.model": str(model_dir), "model.init_args.backbone.embedded": False,
           "trainer.default_root_dir": str(run), "trainer.logger.init_args.save_dir": str(run / "tb")}
    if phase == "sft":
        out.update({"data.train": str(paths["sft"]), "data.val": None, "trainer.max_steps": settings.sft_steps,
                    "trainer.val_check_interval": settings.sft_steps, "trainer.accumulate_grad_batches": 1,  # memory does not depend on it; time does
                    "checkpoint.init_args.dirpath": str(run / "checkpoints"), "adapter.init_args.dirpath": str(run / "adapter")})
    elif phase == "virl":
        tokens = settings.new_tokens or recipe["sampler"]["init_args"]["max_new_tokens"]
        # one chunk per rollout batch: the chunk sets device memory (the batch waits in host memory),
        # and an update of the recipe's 32 prompts is its chunks' time added up, far past the budget
        chunk = recipe["sampler"]["init_args"]["prompts_per_generation"]
        out.update({"data.batch_size": chunk, "sampler.init_args.prompts_per_generation": chunk})
        out.update({"data.train": str(paths["rl"]), "data.val": str(paths["rl"]), "trainer.max_steps": settings.virl_steps,
                    "trainer.val_check_interval": settings.virl_steps, "trainer.limit_val_batches": 1,
                    "model.init_args.backbone.adapter": paths.get("sft_adapter"),
                    "sampler.class_path": "benchmarks.gpu_check_phase.PlantAnswers",
                    "sampler.init_args.max_new_tokens": tokens, "sampler.init_args.min_new_tokens": tokens,
                    "checkpoint.init_args.dirpath": str(run / "checkpoints"), "adapter.init_args.dirpath": str(run / "adapter"),
                    "reward_log.init_args.export_dir": str(run / "grids")})
    elif phase == "test":
        out.update({"model.init_args.backbone.adapter": paths.get("adapter"),
                    "data.benchmark": {"dir": str(paths["rl"]), "kind": "rows", "limit": settings.test_prompts},
                    "predictions.init_args.output_dir": str(run / "predict")})
        if settings.new_tokens:
            out["model.init_args.max_new_tokens"] = settings.new_tokens
    if settings.tiny:
        out.update({"trainer.accelerator": "cpu", "data.num_workers": 0})
        if "encoder" in recipe["model"]["init_args"]:
            out["model.init_args.encoder"] = f"timm:{settings.encoder}"
        if phase == "virl":
            out["render.init_args.workers"] = 1
        if phase == "test":
            out["model.init_args.workers"] = 1
    return out


def recipe_path(model: str, phase: str) -> Path:
    return RECIPES / (f"{model}-eval.yaml" if phase == "test" else f"{model}-qlora-{phase}.yaml")


def phase_config(phase: str, model: str, overrides: dict, out: Path) -> Path:
    """The recipe with `overrides` applied, written as out/<model>-<phase>.yaml."""
    config = yaml.safe_load(recipe_path(model, phase).read_text())
    for key, value in overrides.items():
        node = config
        *path, last = key.split(".")
        for part in path:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    path = out / f"{model}-{phase}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_phase(args: list[str], result: Path, env: dict, python: str = sys.executable) -> dict:
    """One gpu_check_phase process; its JSON result, or the error it ended with."""
    command = [python, "-m", "benchmarks.gpu_check_phase", "--result", str(result), "--", *args]
    if args and args[0] == "--reward":
        command = [python, "-m", "benchmarks.gpu_check_phase", "--result", str(result), *args]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not result.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-12:]
        return {"error": "\n".join(tail), "seconds": round(time.perf_counter() - started, 1)}
    return json.loads(result.read_text())


def build_model(model: str, out: Path, settings: Settings) -> Path:
    """The model folder: full size with random weights, or the family's tiny fixture."""
    if settings.tiny:
        from vinci.families import build_family
        from vinci.tiny import TinySpec

        return build_family(FAMILY[model], out / f"tiny-{FAMILY[model]}", TinySpec(texts_per_language=60))
    from benchmarks.memory_models import ARCHS, build_model_dir

    arch = ARCHS[model]
    return build_model_dir(arch, arch.layers, arch.vision_depth, out)


def write_data(model: str, model_dir: Path, out: Path, settings: Settings) -> dict:
    from benchmarks.gpu_check_data import write_rows
    from benchmarks.memory_models import ARCHS

    sft = yaml.safe_load(recipe_path(model, "sft").read_text())["data"]
    grid = (4, 4) if settings.tiny else (40, 25)  # image tokens: 16 tiny, 1,000 as benchmarks.memory measures
    max_length = 256 if settings.tiny else sft["max_length"]
    unit = ARCHS[model].token_px
    rows = max(8, settings.test_prompts, 4 * settings.virl_steps)
    return write_rows(out / "data" / model, model_dir, unit, grid, sft_rows=sft["batch_size"] * settings.sft_steps,
                      rl_rows=rows, max_length=max_length)


def phase_env(cache: Path) -> dict:
    """The phases' environment: offline, the local cache holding the encoder, quiet."""
    return dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error", TQDM_DISABLE="1", PYTHONWARNINGS="ignore")


def phase_args(phase: str, model: str, model_dir: Path, paths: dict, out: Path, settings: Settings) -> list[str]:
    """vinci's arguments for one phase (after gpu_check_phase's `--`)."""
    run = out / "runs" / f"{model}-{phase}"
    if phase == "export":
        return ["export", "--adapter", str(paths["adapter"]), "--out", str(run / "merged")]
    if phase == "reward":
        return ["--reward", f"timm:{settings.encoder}"]
    config = phase_config(phase, model, phase_overrides(phase, model, model_dir, paths, run, settings), out)
    return ["test" if phase == "test" else "fit", "--config", str(config)]


def engines(root: Path = ROOT, tiny: bool = False) -> dict[str, Optional[str]]:
    """Rollout engine -> None (it runs) or why it does not."""
    vllm = root / ".venv-vllm" / "bin" / "python"
    if not vllm.is_file():
        why = "not set up (no .venv-vllm: make vllm-env)"
    elif tiny:  # the vLLM engine on the CPU is tested in tests/test_vllm_engine.py and tests/test_virl.py
        why = "GPU only here: vLLM quantises the QLoRA recipes' NF4 base with bitsandbytes on CUDA"
    else:
        why = None
    return {"transformers": None, "vllm": why}


def check_model(model: str, phases: list[str], out: Path, cache: Path, settings: Settings, log=print) -> list[dict]:
    """Every phase of one model, in order; each result with its model, phase and engine."""
    started = time.perf_counter()
    model_dir = build_model(model, out / "models", settings)
    paths = write_data(model, model_dir, out, settings)
    rows = [{"model": model, "phase": "build + data", "seconds": round(time.perf_counter() - started, 1)}]
    for phase in phases:
        if phase == "export" and "adapter" not in paths:
            rows.append({"model": model, "phase": phase, "error": "no adapter: run sft or virl first"})
            continue
        for engine, (python, extra) in (ENGINE_RUN.items() if phase == "virl" else [("", (sys.executable, []))]):
            if engine and engines(tiny=settings.tiny)[engine]:
                continue  # not runnable here: said in the notes
            log(f"{model}: {phase} {engine}".rstrip())
            tag = "" if engine in ("", "transformers") else f"-{engine}"
            result = run_phase(phase_args(phase, model, model_dir, paths, out, settings) + extra,
                               out / "results" / f"{model}-{phase}{tag}.json", phase_env(cache), python)
            rows.append({"model": model, "phase": phase + tag, "engine": engine, **result})
        merged = out / "runs" / f"{model}-export" / "merged"
        if phase == "export" and not settings.tiny and (merged / "config.json").is_file():
            shutil.rmtree(merged)  # 7-17 GB of bf16 weights: that they were written is what was checked
        adapter = out / "runs" / f"{model}-{phase}" / "adapter"
        if phase in ("sft", "virl") and "error" not in rows[-1] and adapter.is_dir():
            paths["adapter"] = str(adapter)  # what test and export use: the latest stage's
            if phase == "sft":
                paths["sft_adapter"] = str(adapter)  # what ViRL starts from
    return rows


def need_of(row: dict) -> Optional[Need]:
    if row.get("reserved") is None:
        return None
    allowance = Allowance(context=row["context"], workspaces=0.0, source=f"measured on {row['device']}")
    return Need(row["allocated"], 0.0, allowance, row["reserved"])


def print_table(rows: list[dict], notes: list[str]) -> None:
    print(f"{'model':<14} | {'phase':<12} | {'seconds':>7} | {'alloc GiB':>9} | {'reserved':>8} | {'context':>7} | "
          f"{'card GiB':>8} | 16 GB | 24 GB | note")
    print("-" * 110)
    for row in rows:
        need = need_of(row)
        cells = [f"{row['model']:<14}", f"{row['phase']:<12}", f"{row.get('seconds', 0):7.1f}"]
        if need is None:
            cells += [f"{'-':>9}", f"{'-':>8}", f"{'-':>7}", f"{'-':>8}", "  -  ", "  -  "]
        else:
            cells += [f"{need.allocated / GiB:9.2f}", f"{need.reserved / GiB:8.2f}", f"{need.allowance.context / GiB:7.2f}",
                      f"{need.total / GiB:8.2f}"] + [f"{'fits' if need.fits(card) else 'NO':<5}" for card in CARDS]
        shown = {k: v for k, v in row.get("metrics", {}).items() if k in ("render/rate", "reward/visual_mean", "train/loss")}
        note = (row["error"].splitlines()[-1][:120] if row.get("error")
                else " ".join([row.get("engine", ""), *(f"{k} {v:g}" for k, v in shown.items())]).strip())
        print(" | ".join(cells) + f" | {note}")
    for note in notes:
        print(note)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    parser.add_argument("--out", default="runs/gpu-check", help="everything built and written goes here")
    parser.add_argument("--tiny", action="store_true", help="tiny fixtures on the CPU: the script's own check")
    args = parser.parse_args(argv)
    settings = Settings.for_mode(args.tiny)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "results").mkdir(exist_ok=True)
    cache = out / "hub-cache"
    from benchmarks.gpu_check_data import fill_hub_cache

    fill_hub_cache(cache, settings.encoder)
    phases = [p for p in PHASES if p in args.phases]
    rows = [row for model in args.models for row in check_model(model, phases, out, cache, settings)]
    notes = [f"engine {name}: {why}" for name, why in engines(tiny=args.tiny).items() if why]
    notes.append("card GiB = peak reserved + context (used - reserved after the phase), benchmarks/memory_budget.py; "
                 + ", ".join(f"{card} GB = {size / GiB:.2f} GiB" for card, size in CARDS.items()))
    print_table(rows, notes)
    (out / "gpu_check.json").write_text(json.dumps({"rows": rows, "notes": notes, "tiny": args.tiny}, indent=1))


if __name__ == "__main__":
    main()
