"""Peak memory per phase of each recipe, for real-size Qwen2.5-VL and Qwen3-VL built without weights.

    python -m benchmarks.memory                                   # every model, on the CPU: projected
    python -m benchmarks.memory --models qwen2.5-vl-3b qwen3-vl-8b
    python -m benchmarks.memory --layers full --rows 2,4 --tokens 1024,2048 --sample-tokens 2048   # GPU: measured
    python -m benchmarks.memory --report memory.json            # the tables again from a --json file

Each model is built from its released configuration (`ARCHS`) with random weights, saved with
`save_pretrained` and loaded through `vinci.backbone.load_backbone`, so the real loading path
(NF4 quantisation, peft's fp32 upcasts for k-bit training, LoRA r=16 on every language linear
layer, gradient checkpointing) is what is measured. The phases run vinci's own code:

- sampling: `vinci.generation.sample`, G rows of one prompt, EOS unsampleable until
  max_new_tokens (`min_new_tokens`): every row is as long as a random policy makes it;
- update: one ViRL micro-batch as `ViRLModule.update` runs it: `vinci.logprobs.sequence_logp`
  with the entropy, `vinci.grpo.policy_loss`, backward, gradient clipping, AdamW step, under bf16
  autocast as Lightning's `bf16-mixed` runs the training step (vinci samples inside it too; this measures it outside);
- SFT: one micro-batch of `vinci.logprobs.answer_loss`, backward, clipping, AdamW step;
- reward: `vinci.reward.similarity.patch_similarity` of G renders against their reference with
  DINOv2-L, 12 tiles + thumbnail of 448 px per image.

The LoRA gradients and AdamW state exist in every phase, as from the second step on. Memory is
`torch.cuda.max_memory_allocated` on a GPU and the peak of live tensor bytes on the CPU
(`vinci.tensor_memory.LiveTensorBytes`: what a tensor allocator must hold, not RSS).

A CPU cannot run 36 layers over 32 x 3,000 tokens, so by default each model is measured with 2
and 3 decoder layers, at 1 and 2 rows and two short lengths, and projected linearly, each segment
of a phase (vision tower, decoder layers, output head; forward, backward, optimizer step) on its
own, the largest giving the phase's peak:

    per decoder layer    from the two depths (weights, KV cache, checkpointed layer inputs)
    per vision block     by its measured weight bytes (a frozen block keeps no activations)
    per token            sampling: a line through the peaks of the decode steps of one run;
                         update/SFT: from the two lengths, the per-layer part in proportion to
                         prompt + completion (a checkpoint is [rows, tokens, hidden])
    per row              sampling: every tensor is per row, so G measured rows scale to B x G;
                         update/SFT: from 1 and 2 rows, whose difference is one row's share

Every figure says whether it was measured or projected. On Qwen2.5-VL-3B the projections matched
direct measurements at 5 layers, 4 rows and 1,024 tokens to within 2 MiB. Limits: DINOv2-L
computes in fp32 on the CPU (vinci's TimmEncoder autocasts to bf16 on CUDA only), which
overstates its activations; CPU and CUDA kernels differ (their scratch memory, which is not seen,
and autocast's op lists).

Allocated bytes are not what a card must hold. benchmarks/memory_budget.py adds what the
allocator does not count (the CUDA context with its loaded kernels, cuBLAS workspaces: figures
and sources there) and a fragmentation margin, or on a GPU takes `max_memory_reserved` and the
measured context instead, and checks the total against 16 and 24 GB cards. Each phase is also
given per chunk of P = 1, 2, 4 prompts x G samples (a rollout batch sampled a chunk at a time).
The eval recipe (bf16 base, 8 greedy answers) is projected from the LoRA-bf16 runs' resident
bytes and the sampling fit.

Modules: memory_models (configs, recipes, building), memory_measure (the measuring),
memory_fit (the projections), memory_budget (the card totals), memory_report (the tables).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks.memory_measure import Meter, measure_reward, run_policy
from benchmarks.memory_models import ARCHS, IMAGE_TOKENS, RECIPES, Arch, Plan, build_model_dir
from benchmarks.memory_report import report, reward_summary

log = logging.getLogger("benchmarks.memory")
ROOT = Path(__file__).resolve().parents[1]


# ---- running --------------------------------------------------------------------------------
def worker_tasks(name: str, plan: Plan, folder_for) -> list[dict]:
    """The worker processes for one model: (QLoRA: sampling, update, SFT; LoRA-bf16: SFT) x depths.
    The first depth gets StepFit's four-point design, the second only its first point."""
    arch, recipe = ARCHS[name], RECIPES[name]
    depths = plan.layers or (arch.layers,)
    (n0, n1), (N0, N1) = plan.rows, plan.tokens
    tasks = []
    for qlora in (True, False):
        for i, layers in enumerate(depths):
            points = [(n0, N0)] + ([(n0, N1), (n1, N0)] if i == 0 else [])
            kinds = ("update", "sft") if qlora else ("sft",)
            jobs = [{"kind": kind, "rows": n, "new_tokens": N} for kind in kinds for n, N in points]
            if qlora:
                jobs.insert(0, {"kind": "sampling", "rows": recipe.group, "new_tokens": plan.sample_tokens[min(i, len(plan.sample_tokens) - 1)]})
            tasks.append({"model": name, "qlora": qlora, "layers": layers, "folder": str(folder_for(layers)),
                          "token_px": arch.token_px, "image_grid": [40, IMAGE_TOKENS // 40], "jobs": jobs})
    return tasks


def in_worker(kind: str, task: dict, work: Path) -> dict:
    """Run `task` in a fresh process (clean peak, memory returned on exit); its JSON result."""
    spec, result = work / "task.json", work / "result.json"
    spec.write_text(json.dumps(task))
    result.unlink(missing_ok=True)
    quiet = dict(os.environ, TRANSFORMERS_VERBOSITY="error", HF_HUB_DISABLE_PROGRESS_BARS="1", TQDM_DISABLE="1",
                 PYTHONWARNINGS="ignore")
    quiet.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # as vinci's command line sets it
    subprocess.run([sys.executable, "-m", "benchmarks.memory", "--worker", kind, str(spec), str(result)],
                   cwd=ROOT, env=quiet, check=True)
    return json.loads(result.read_text())



def worker_main(kind: str, spec: Path, result: Path) -> None:
    task = json.loads(spec.read_text())
    if kind == "build":
        arch = Arch(**task["arch"])
        out = build_model_dir(arch, task["layers"], task["vision_depth"], Path(task["out"]))
        result.write_text(json.dumps({"folder": str(out)}))
    elif kind == "policy":
        result.write_text(json.dumps(run_policy(task)))
    else:
        result.write_text(json.dumps(measure_reward(Meter(), Path(task["out"]), task["depth"], task["group"])))


def measure_model(name: str, plan: Plan, work: Path) -> dict:
    arch = ARCHS[name]
    vision_depth = arch.vision_depth if plan.vision_blocks is None else plan.vision_blocks[arch.family]
    folders = {}

    def folder_for(layers: int) -> Path:
        if layers not in folders:
            log.info("building %s with %d decoder layers, %d vision blocks", name, layers, vision_depth)
            task = {"arch": asdict(arch), "layers": layers, "vision_depth": vision_depth, "out": str(work)}
            folders[layers] = Path(in_worker("build", task, work)["folder"])
        return folders[layers]

    runs = {"qlora": [], "bf16": []}
    meta = {}
    for task in worker_tasks(name, plan, folder_for):
        log.info("%s %s, %d layers: %s", name, "QLoRA" if task["qlora"] else "LoRA-bf16", task["layers"],
                 ", ".join(f"{j['kind']} {j['rows']}x{j['new_tokens']}" for j in task["jobs"]))
        out = in_worker("policy", task, work)
        key = "qlora" if task["qlora"] else "bf16"
        runs[key] += out["results"]
        meta[key] = {"vision_block_bytes": out["vision_block_bytes"], "prompt_tokens": out["prompt_tokens"],
                     "method": out["method"], "context": out.get("context"), "device": out.get("device", "cpu")}
    for folder in folders.values():
        shutil.rmtree(folder, ignore_errors=True)
    return {"name": name, "vision_depth": vision_depth, "runs": runs, "meta": meta}



def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(ARCHS), default=list(ARCHS))
    parser.add_argument("--layers", default="2,3", help="two decoder depths to build and measure, or 'full'")
    parser.add_argument("--rows", default="1,2", help="two update/SFT micro-batch sizes to measure")
    parser.add_argument("--tokens", default="64,320", help="two update/SFT completion lengths to measure")
    parser.add_argument("--sample-tokens", default="32,16", help="sampling new tokens at each measured depth")
    parser.add_argument("--reward-depth", type=int, default=1, help="DINOv2-L blocks to build (24 = full)")
    parser.add_argument("--context-mib", type=float, default=None,
                        help="CUDA context in MiB instead of the cited 512 (e.g. gpu_check's measured one)")
    parser.add_argument("--work", default=None, help="folder for built models (default: a temporary one, removed)")
    parser.add_argument("--json", default=None, help="also write every measured figure to this file")
    parser.add_argument("--report", default=None, help="print the report of a --json file again, measuring nothing")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "TASK", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("transformers", "peft", "bitsandbytes", "timm", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if args.worker:
        worker_main(args.worker[0], Path(args.worker[1]), Path(args.worker[2]))
        return
    if args.report:
        report(json.loads(Path(args.report).read_text()), args.context_mib)
        return
    full = args.layers == "full"
    ints = lambda text: tuple(int(x) for x in text.split(","))  # noqa: E731
    plan = Plan(layers=() if full else ints(args.layers), rows=ints(args.rows), tokens=ints(args.tokens),
                sample_tokens=ints(args.sample_tokens), vision_blocks=None if full else {"qwen2_5_vl": 1, "qwen3_vl": 3},
                reward_depth=args.reward_depth)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="vinci-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        log.info("reward encoder: DINOv2-L with %d block(s)", plan.reward_depth)
        data = {"plan": asdict(plan), "reward": reward_summary(in_worker("reward", {"out": str(work), "depth": plan.reward_depth,
                                                                                 "group": 8}, work)), "models": []}
        for name in args.models:
            data["models"].append(measure_model(name, plan, work))
            data["seconds"] = time.perf_counter() - started
            if args.json:  # after every model: a later failure keeps what was measured
                Path(args.json).write_text(json.dumps(data, indent=1))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    report(data, args.context_mib)


if __name__ == "__main__":
    main()