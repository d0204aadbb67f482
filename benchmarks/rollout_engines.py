"""Rollout engines side by side: `generate` (hf) against the vLLM worker (vllm) on the same
prompts, G and answer length, measured in one run.

    python -m benchmarks.rollout_engines                                   # embedded default, CPU
    python -m benchmarks.rollout_engines --prompts 8 --samples 4 --new-tokens 128 --rounds 3
    # GPU (prepared, see README): full-size random-weight Qwen2.5-VL-3B, QLoRA, G = 8, 2,048 tokens
    python -m benchmarks.rollout_engines --arch qwen2.5-vl-3b --qlora --prompts 8 --samples 8 \
        --new-tokens 2048 --kv-cache-gb 6 --sleep

Each engine runs in a fresh process of its own, on the same policy: the model with a LoRA whose
B matrices are random (a fresh peft LoRA is a no-op), so the vLLM worker applies a real adapter.
Every answer is forced to `--new-tokens` (min = max): a random policy writes to the limit, and
then both engines decode exactly the same number of tokens. Round 0 is the warm-up; the others
are timed. Columns:

- **start s**: hf: loading the model in the trainer; vllm: starting the worker (loading, KV cache,
  compilation) until it answers, plus writing the rollout base and adapter;
- **s/rollout**: seconds per rollout (one prompt x one answer), mean over the timed rounds;
- **tokens/s**: completion tokens per second over the timed rounds;
- **peak MiB**: CPU: the peak resident set of the sampling processes (hf: the trainer; vllm: the
  worker's process tree; the trainer's copy of the policy is in neither); GPU: the card's peak
  used memory (total - free, sampled every 50 ms) less what it held before the engine started;
- **slept MiB** (vllm on a GPU with --sleep): the card's used memory while the worker sleeps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "<image>Write the python code that draws this chart."


class PeakMemory:
    """Peak resident memory of a process tree (CPU) or used device memory (GPU), sampled."""

    def __init__(self, pid: int, cuda: bool):
        import psutil

        self.process, self.cuda, self.peak, self.stop = psutil.Process(pid), cuda, 0, False
        self.base = self.used()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def used(self) -> int:
        if self.cuda:
            import torch

            free, total = torch.cuda.mem_get_info()
            return total - free
        tree = [self.process] + self.process.children(recursive=True)
        return sum(p.memory_info().rss for p in tree if p.is_running())

    def run(self) -> None:
        while not self.stop:
            try:
                self.peak = max(self.peak, self.used())
            except Exception:  # a child that just exited
                pass
            time.sleep(0.05)

    def close(self) -> float:
        self.stop = True
        self.thread.join()
        return (self.peak - (self.base if self.cuda else 0)) / 2**20


def model_folder(args, work: Path) -> Path:
    if args.arch:
        from benchmarks.memory_models import ARCHS, build_model_dir

        arch = ARCHS[args.arch]
        return build_model_dir(arch, arch.layers, arch.vision_depth, work)
    from vinci.tiny import TinySpec, build_tiny_vlm

    folder = ROOT / "artifacts" / "tiny-vlm"
    return folder if (folder / "config.json").is_file() else build_tiny_vlm(folder, TinySpec())


def policy_module(args, model: Path):
    """A ViRLModule on `model` whose LoRA is not a no-op (random B matrices, fixed seed)."""
    import torch

    from vinci.backbone import Backbone, Lora, Quantization
    from vinci.virl import ViRLModule

    cuda = torch.cuda.is_available()
    backbone = Backbone(model=str(model), dtype="bfloat16" if cuda else "float32", lora=Lora(r=16, alpha=32, dropout=0.0),
                        quantization=Quantization(load_in_4bit=args.qlora))
    module = ViRLModule(backbone, temperature=1.0, reuse_vision=False)
    if cuda:
        module._device = torch.device("cuda", 0)
    module.configure_model()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in module.model.named_parameters():
            if ".lora_B." in name:
                parameter.copy_((torch.randn(parameter.shape, generator=generator) * 0.02).to(parameter))
    return module


def prompts(module, n: int):
    from benchmarks.memory_models import chart_image
    from vinci.data.collate import RLCollator
    from vinci.data.rows import Example

    token_px = module.processor.image_processor.patch_size * module.processor.image_processor.merge_size
    examples = [Example(chart_image(token_px), PROMPT, "python", None, f"bench:{i}") for i in range(n)]
    return RLCollator(module.processor)(examples)


def run_engine(engine: str, args, model: Path, work: Path) -> dict:
    """One engine in this process: start, warm up, timed rounds. Returns the table row."""
    import torch

    from callbacks.rollout import RolloutSampler
    from vinci.engines.vllm_client import VLLMSettings

    cuda = torch.cuda.is_available()
    memory = PeakMemory(os.getpid(), cuda) if engine == "hf" else None
    began = time.perf_counter()
    module = policy_module(args, model)
    batch = prompts(module, args.prompts)
    sampler = RolloutSampler(num_samples=args.samples, temperature=1.0, max_new_tokens=args.new_tokens,
                             min_new_tokens=args.new_tokens, engine=engine,
                             vllm=VLLMSettings(python=args.python, kv_cache_gb=args.kv_cache_gb, sleep=args.sleep,
                                               work_dir=str(work / "vllm"), max_model_len=args.max_model_len))
    row = {"engine": engine, "start s": 0.0}
    if engine == "vllm":
        loaded = time.perf_counter()
        rollouts = sampler.vllm_rollouts(module)
        row["start s"] = time.perf_counter() - loaded
        memory = PeakMemory(rollouts.engine.process.pid, cuda)
    else:
        row["start s"] = time.perf_counter() - began
    seconds, tokens = [], 0
    for round_ in range(args.rounds + 1):
        torch.manual_seed(round_)
        started = time.perf_counter()
        done = sampler.sample_chunk(module, batch)
        if round_:  # round 0 warms up
            seconds.append(time.perf_counter() - started)
            tokens += int(done.completion_mask.sum())
        sampler.rollout_done()
    rollouts_per_round = args.prompts * args.samples
    row.update({"s/rollout": sum(seconds) / len(seconds) / rollouts_per_round, "tokens/s": tokens / sum(seconds),
                "peak MiB": memory.close()})
    if engine == "vllm" and cuda and args.sleep:
        row["slept MiB"] = PeakMemory(os.getpid(), True).used() / 2**20
    sampler.close()
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    parser.add_argument("--arch", default=None, help="a full-size random-weight model (benchmarks.memory_models.ARCHS)")
    parser.add_argument("--qlora", action="store_true", help="NF4 base (GPU only)")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--samples", type=int, default=4, help="G")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds after one warm-up")
    parser.add_argument("--kv-cache-gb", type=float, default=1.0)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--sleep", action="store_true", help="the worker sleeps between rounds (GPU)")
    parser.add_argument("--python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--work", default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one engine, print its row
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="rollout-engines-"))
    model = model_folder(args, work)
    if args.one:
        print("ROW " + json.dumps(run_engine(args.one, args, model, work)), flush=True)
        return
    rows = []
    for engine in args.engines:
        argv_one = [sys.executable, "-m", "benchmarks.rollout_engines", *(argv if argv is not None else sys.argv[1:]),
                    "--one", engine, "--work", str(work)]
        done = subprocess.run(argv_one, cwd=ROOT, capture_output=True, text=True)
        found = [line[4:] for line in done.stdout.splitlines() if line.startswith("ROW ")]
        if done.returncode or not found:
            raise SystemExit(f"{engine} failed:\n{(done.stderr or done.stdout)[-3000:]}")
        rows.append(json.loads(found[-1]))
    print(f"model {model.name}{' (QLoRA)' if args.qlora else ''}: {args.prompts} prompts x G {args.samples}, "
          f"{args.new_tokens} new tokens each (forced), {args.rounds} timed rounds after a warm-up")
    columns = ["engine", "start s", "s/rollout", "tokens/s", "peak MiB"] + (["slept MiB"] if any("slept MiB" in r for r in rows) else [])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(f"{row[c]:.3f}" if isinstance(row.get(c), float) and c == "s/rollout"
                                else f"{row[c]:.1f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns) + " |")
    if len(rows) == 2:
        hf, vllm = rows
        print(f"vllm / hf tokens/s: {vllm['tokens/s'] / hf['tokens/s']:.2f}x")


if __name__ == "__main__":
    main()
