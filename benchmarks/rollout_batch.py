"""Rollout batch against memory and render overlap: ViRL's `data.batch_size` with a fixed chunk.

    python -m benchmarks.rollout_batch                        # runs 8:8 64:8 64:null 8:2, 64 new tokens
    python -m benchmarks.rollout_batch --runs 8:8 64:8 --new-tokens 256 --steps 3
    python -m benchmarks.rollout_batch --runs 2:1 2:null --samples 2 --new-tokens 4 --languages svg --n-train 1

Each run is `main.py fit` on configs/virl.yaml in a fresh process, as a user runs it, with these
departures: the embedded default model is built into the work folder; the corpus is in the
config's four languages at `--n-train` programs per language, enough for the largest batch, and
direct rows only unless `--refine-fraction` (the config's 0.5 adds refine rows, whose prompts
carry code and are far longer, so a larger batch would also hold longer prompts); ViRL starts
from a fresh LoRA saved as the "SFT adapter" (so the KL term to a frozen reference, kl_coef 0.1,
runs as configured); the sampler is benchmarks.planted.PlantAnswers (each group's first answer
is the prompt's reference program: B programs rendered a step, rewards that differ) with
`min_new_tokens` = `max_new_tokens` (every answer as long as the longest, the worst case);
checkpoints, adapter export and image grids are off. A run is `B:chunk`: B prompts per rollout
batch (`data.batch_size`), `chunk` prompts per generate call (`sampler.prompts_per_generation`,
`null` = the whole batch in one call).

Step 0 is the warm-up, steps 1..`--steps` are timed, and the last step is measured for memory:
`vinci.tensor_memory.LiveTensorBytes` runs over that whole step (sampling, renders, reference
log-probs, update), so its tensors are counted and its time is not used. Columns:

- **RSS MiB**: peak resident set of the trainer process over the run (getrusage), which
  includes loading and every step; the render workers are other processes.
- **live MiB**: peak bytes of live tensors in the measured step (weights, optimizer state and
  the host-side batch included); **step MiB** is that peak less what was alive when the step
  began: what the step itself allocated at its peak (the KV cache of one chunk, one
  micro-batch's activations, the rollout's [N, L] tensors); **batch MiB**: the collated prompt
  tensors of the batch, which stay in host memory (pixel values, ids, masks), part of the
  live figure but not of the step's; **live - batch MiB** is the live peak without them: what a
  GPU would hold (weights, optimizer state, one chunk's or one micro-batch's tensors, the
  rollout's small [N, L] tensors), the figure the 10% target below is checked on (on a GPU,
  `max_memory_allocated`).
- on a GPU also **cuda alloc / reserved MiB**: `torch.cuda.max_memory_allocated` /
  `max_memory_reserved` over the measured step (no tracker there: the device's own counters).
- **s/step**, **sample s**, **update s**, **score s**, **render s**, **exposed s**: means over
  the timed steps of the rollout's phase seconds, which the RewardLogger logs as `time/*_s` (score on
  the scorer's thread, beside sampling);
  render is first submit to last result, exposed (`time/render_exposed_s`) is the wait for
  renders after the last chunk was sampled (and after the reference pass); **exposed %** is
  exposed / render over the timed steps. **reference s** is the KL term's reference pass, timed
  here by wrapping `reference_logp`: it is in no `time/*` phase. It runs while the last renders
  finish, so with KL it hides renders as later chunks do; on a CPU it also shares the cores
  with the render workers, so a render it hides still costs time there.

Below the table: each pair of runs with the same chunk and different B (the memory target: the
larger B's peak within 10% of the smallest's), and each pair with the same B and different
chunks (the render share hidden by chunking).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import lightning as L
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20
DEFAULT_RUNS = ("8:8", "64:8", "64:null", "8:2")

log = logging.getLogger("rollout_batch")


def parse_run(text: str) -> tuple[int, Optional[int]]:
    """"B:chunk" -> (B, chunk or None); "B" alone is the whole batch in one call."""
    batch, _, chunk = text.partition(":")
    size = int(batch)
    if size < 1:
        raise ValueError(f"a rollout batch needs at least one prompt: {text!r}")
    if chunk in ("", "null", "none", "None"):
        return size, None
    if int(chunk) < 1:
        raise ValueError(f"prompts_per_generation must be >= 1: {text!r}")
    return size, int(chunk)


def chunk_name(chunk: Optional[int]) -> str:
    return "null" if chunk is None else str(chunk)


def generate_calls(batch: int, chunk: Optional[int]) -> int:
    return -(-batch // (chunk or batch))


def tensor_bytes(tree) -> int:
    """Bytes of the distinct tensor storages in a dict/list of tensors."""
    seen, total = set(), 0
    values = tree.values() if isinstance(tree, dict) else tree
    for value in values:
        if torch.is_tensor(value):
            storage = value.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


# ---- inside the trainer process ------------------------------------------------------------
class Probe(L.Callback):
    """Phase seconds of every step, and memory of the last one; written to `record` at fit end."""

    def __init__(self, record: str, memory_step: int):
        self.path = Path(record)
        self.memory_step = memory_step
        self.steps: list[dict] = []
        self.tracker = None
        self.rss_at_start = 0

    def setup(self, trainer, module, stage: str) -> None:
        reference = getattr(module, "reference_logp", None)  # the KL term's pass: in no phase of rollout.seconds
        if callable(reference):
            def timed_reference(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return reference(*args, **kwargs)
                finally:
                    self.current["reference"] = self.current.get("reference", 0.0) + time.perf_counter() - started

            module.reference_logp = timed_reference  # training_step calls self.reference_logp

    def on_train_start(self, trainer, module) -> None:
        self.rss_at_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.current = dict(batch=tensor_bytes(batch.inputs), prompts=len(batch.images),
                            prompt_tokens=int(batch.inputs["attention_mask"].sum(dim=1).max()))
        if len(self.steps) == self.memory_step:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            else:
                from vinci.tensor_memory import LiveTensorBytes

                self.tracker = LiveTensorBytes()
                self.tracker.__enter__()
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        seconds = time.perf_counter() - self.started
        rollout = (outputs or {}).get("rollout")
        if rollout is None:
            raise TypeError(f"{type(module).__name__}.training_step returned no rollout; this benchmark needs updating")
        phases = dict(rollout.seconds, reference=self.current.pop("reference", 0.0))
        step = dict(self.current, seconds=seconds, phases=phases, rows=rollout.num_rows,
                    renders=rollout.render_jobs, tokens=int(rollout.completion_mask.sum(dim=1).max()),
                    reward=float(rollout.rewards.overall.mean()))
        if self.tracker is not None:
            self.tracker.__exit__(None, None, None)
            step.update(live_peak=self.tracker.peak, live_start=self.tracker.baseline, peak_op=self.tracker.peak_op)
            self.tracker = None
        if len(self.steps) == self.memory_step and torch.cuda.is_available():
            step.update(cuda_allocated=torch.cuda.max_memory_allocated(),
                        cuda_reserved=torch.cuda.max_memory_reserved(), cuda_start=torch.cuda.memory_allocated())
        self.steps.append(step)

    def on_fit_end(self, trainer, module) -> None:
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
        self.path.write_text(json.dumps(dict(steps=self.steps, peak_rss=peak_rss, rss_at_start=self.rss_at_start,
                                             device=str(module.device))))


# ---- the parent -----------------------------------------------------------------------------
def prepare(out: Path, n_train: int, languages: list[str], refine_fraction: float,
            model: Optional[Path] = None) -> tuple[Path, Path, Path]:
    """The model (default: the embedded default, built), a fresh LoRA saved as the starting
    adapter, and the corpus."""
    from vinci.backbone import Backbone, load_backbone, save_adapter
    from vinci.data.synth import build_corpus
    from vinci.tiny import TinySpec, build_tiny_vlm

    config = yaml.safe_load((ROOT / "configs" / "virl.yaml").read_text())
    synthetic = config["data"]["synthetic"]
    model = model or build_tiny_vlm(out / "tiny-vlm", TinySpec())  # what `embedded: true` builds
    adapter = out / "start-adapter"
    if not (adapter / "adapter_config.json").is_file():
        backbone = dict(config["model"]["init_args"]["backbone"], model=str(model), embedded=False, adapter=None)
        save_adapter(*load_backbone(Backbone(**backbone)), adapter)
    corpus = out / "synth"
    if not (corpus / "manifest.json").is_file():
        build_corpus(corpus, seed=synthetic["seed"], n_train=n_train, n_val=1, n_test=1, languages=languages,
                     refine_fraction=refine_fraction)
    return model, adapter, corpus


def run_config(out: Path, model: Path, adapter: Path, corpus: Path, batch: int, chunk: Optional[int],
               samples: int, new_tokens: int, steps: int, micro_batch: Optional[int],
               kl_coef: Optional[float] = None) -> dict:
    """configs/virl.yaml for one run, as the module docstring lists."""
    from benchmarks.reproduce import retarget

    name = f"b{batch}-c{chunk_name(chunk)}"
    config = retarget(yaml.safe_load((ROOT / "configs" / "virl.yaml").read_text()), out, name)
    config["trainer"].update(max_steps=2 + steps, enable_progress_bar=False, enable_checkpointing=False)
    config["trainer"]["callbacks"] = [dict(class_path="benchmarks.rollout_batch.Probe",
                                           init_args=dict(record=str(out / f"{name}.json"), memory_step=1 + steps))]
    config["checkpoint"] = None
    config["adapter"] = None
    config["reward_log"]["init_args"].update(every_n_steps=0, export_dir=None)  # scalars only, no grids
    config["sampler"]["class_path"] = "benchmarks.planted.PlantAnswers"
    config["sampler"]["init_args"].update(num_samples=samples, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                          prompts_per_generation=chunk)
    init = config["model"]["init_args"]
    init["backbone"].update(model=str(model), embedded=False, adapter=str(adapter))
    if micro_batch:
        init["micro_batch_size"] = micro_batch
    if kl_coef is not None:
        init["kl_coef"] = kl_coef
    config["data"]["batch_size"] = batch
    config["data"]["synthetic"]["dir"] = str(corpus)
    return config


def fit(config: dict, path: Path, threads: int) -> None:
    from benchmarks.reproduce import write_config

    write_config(config, path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    logfile = path.with_suffix(".log")
    with open(logfile, "w") as sink:
        done = subprocess.run([sys.executable, "main.py", "fit", "--config", str(path)], cwd=ROOT, env=env,
                              stdout=sink, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = "\n".join(logfile.read_text().splitlines()[-25:])
        raise SystemExit(f"the run {path.stem} failed; see {logfile}:\n{tail}")


def summarise(record: dict, timed: int) -> dict:
    """One run's row: memory of the measured (last) step, mean phase seconds of the timed ones."""
    steps = record["steps"]
    measured, times = steps[-1], steps[1 : 1 + timed]
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    render = sum(s["phases"].get("render", 0.0) for s in times)
    exposed = sum(s["phases"].get("render_exposed", 0.0) for s in times)
    row = dict(
        rss=record["peak_rss"], rss_at_start=record["rss_at_start"], batch=measured["batch"],
        seconds=mean([s["seconds"] for s in times]),
        sample=mean([s["phases"]["sample"] for s in times]), render=render / len(times),
        exposed=exposed / len(times), exposed_share=exposed / render if render else float("nan"),
        update=mean([s["phases"].get("update", 0.0) for s in times]),
        reference=mean([s["phases"].get("reference", 0.0) for s in times]),
        score=mean([s["phases"].get("score", 0.0) for s in times]),
        rows=measured["rows"], renders=measured["renders"], tokens=measured["tokens"],
        prompt_tokens=max(s["prompt_tokens"] for s in steps), device=record["device"],
    )
    for key in ("live_peak", "live_start", "peak_op", "cuda_allocated", "cuda_reserved", "cuda_start"):
        if key in measured:
            row[key] = measured[key]
    if "live_peak" in row:
        row["step"] = row["live_peak"] - row["live_start"]
        row["device_like"] = row["live_peak"] - row["batch"]  # what a GPU would hold: the batch stays on the host
    return row


def table(runs: list[tuple[int, Optional[int], dict]], samples: int, new_tokens: int, steps: int,
          kl_coef: float = 0.1) -> str:
    cuda = any("cuda_allocated" in r for _, _, r in runs)
    head = ["B", "chunk", "calls", "RSS MiB", "live MiB", "batch MiB", "live - batch MiB", "step MiB"]
    if cuda:
        head += ["cuda alloc MiB", "cuda reserved MiB"]
    head += ["s/step", "sample s", "reference s", "update s", "score s", "render s", "exposed s", "exposed %"]
    lines = [f"ViRL on the embedded default (configs/virl.yaml): {samples} samples x {new_tokens} new tokens "
             f"(all rows full length), planted answers, kl_coef {kl_coef}, {steps} timed steps after a warm-up, "
             "memory on one more step",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for batch, chunk, r in runs:
        mib = lambda key: f"{r[key] / MIB:,.1f}" if key in r else "-"  # noqa: E731
        cells = [str(batch), chunk_name(chunk), str(generate_calls(batch, chunk)), f"{r['rss'] / MIB:,.0f}",
                 mib("live_peak"), mib("batch"), mib("device_like"), mib("step")]
        if cuda:
            cells += [mib("cuda_allocated"), mib("cuda_reserved")]
        cells += [f"{r['seconds']:.1f}", f"{r['sample']:.1f}", f"{r['reference']:.1f}", f"{r['update']:.1f}",
                  f"{r['score']:.2f}", f"{r['render']:.2f}", f"{r['exposed']:.2f}", f"{100 * r['exposed_share']:.0f}%"]
        lines.append("| " + " | ".join(f"{c:>{len(h)}}" for c, h in zip(cells, head)) + " |")
    return "\n".join(lines)


def comparisons(runs: list[tuple[int, Optional[int], dict]]) -> list[str]:
    """Memory: same chunk, smallest B against each larger one. Render: same B, chunked against null."""
    lines = []
    key = "cuda_allocated" if any("cuda_allocated" in r for _, _, r in runs) else "device_like"
    by_chunk: dict = {}
    for batch, chunk, r in runs:
        if chunk is not None:
            by_chunk.setdefault(chunk, []).append((batch, r))
    for chunk, group in by_chunk.items():
        group.sort(key=lambda item: item[0])
        (small, base), rest = group[0], group[1:]
        for batch, r in rest:
            ratios = {"RSS": r["rss"] / base["rss"]}
            for name, field in (("live", "live_peak"), ("live - batch", "device_like"), ("step", "step"),
                                ("cuda alloc", "cuda_allocated"), ("cuda reserved", "cuda_reserved")):
                if field in r and field in base:
                    ratios[name] = r[field] / base[field]
            target = ratios.get("cuda alloc" if key == "cuda_allocated" else "live - batch")
            verdict = "" if target is None else (
                f"; {'cuda alloc' if key == 'cuda_allocated' else 'live - batch'} within 10%: "
                f"{'yes' if target <= 1.10 else 'NO'}")
            lines.append(f"chunk {chunk}: B {batch} / B {small} peak memory "
                         + ", ".join(f"{name} {value:.2f}x" for name, value in ratios.items()) + verdict)
    by_batch: dict = {}
    for batch, chunk, r in runs:
        by_batch.setdefault(batch, []).append((chunk, r))
    for batch, group in by_batch.items():
        whole = [r for chunk, r in group if generate_calls(batch, chunk) == 1]
        for chunk, r in group:
            if whole and generate_calls(batch, chunk) > 1:
                w = whole[0]
                lines.append(f"B {batch}: render exposed {100 * r['exposed_share']:.0f}% of render with chunk {chunk} "
                             f"({r['exposed']:.2f} of {r['render']:.2f} s), {100 * w['exposed_share']:.0f}% in one "
                             f"generate call ({w['exposed']:.2f} of {w['render']:.2f} s); s/step {r['seconds']:.1f} "
                             f"against {w['seconds']:.1f}")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS),
                        help="B:chunk per run: prompts per rollout batch : prompts per generate call (null = all)")
    parser.add_argument("--samples", type=int, default=None, help="G (default: configs/virl.yaml's)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens every answer writes")
    parser.add_argument("--steps", type=int, default=2, help="timed steps after the warm-up (one more measures memory)")
    parser.add_argument("--micro-batch", type=int, default=None, help="update rows per forward/backward "
                        "(default: configs/virl.yaml's)")
    parser.add_argument("--kl-coef", type=float, default=None,
                        help="default: configs/virl.yaml's 0.1 (VinciCoder: 0). With KL, the reference pass runs "
                             "after the last chunk while renders finish, so it hides them too")
    parser.add_argument("--n-train", type=int, default=None,
                        help="programs per language in the corpus (default: enough for the largest B)")
    parser.add_argument("--languages", nargs="+", default=None, help="default: configs/virl.yaml's")
    parser.add_argument("--refine-fraction", type=float, default=0.0,
                        help="share of programs that also give a refine row (configs/virl.yaml: 0.5); refine "
                             "prompts carry code and are far longer, so a larger batch is likelier to hold the "
                             "longest prompt: 0 keeps prompt lengths alike across batch sizes")
    parser.add_argument("--model", default=None, help="a model directory (default: build the embedded "
                        "default into the work folder, as configs/virl.yaml's `embedded: true` does)")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads of the trainer; 0 = torch's default (one per core). With the render "
                             "workers on the same cores, more than one stalls every small op when a thread is "
                             "descheduled (on 2 shared cores: chunked sampling 10x slower with 2)")
    parser.add_argument("--out", default=None, help="work folder, kept (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    try:
        runs = [parse_run(text) for text in args.runs]
    except ValueError as err:
        parser.error(str(err))
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    config = yaml.safe_load((ROOT / "configs" / "virl.yaml").read_text())
    languages = args.languages or config["data"]["synthetic"]["languages"]
    samples = args.samples or config["sampler"]["init_args"]["num_samples"]
    largest = max(batch for batch, _ in runs)
    n_train = args.n_train or -(-largest // len(languages))  # direct rows alone fill the largest batch
    out = Path(args.out or tempfile.mkdtemp(prefix="rollout-batch-")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    model, adapter, corpus = prepare(out, n_train, languages, args.refine_fraction,
                                     Path(args.model).resolve() if args.model else None)
    results = []
    for batch, chunk in runs:
        log.info("run B %d, chunk %s", batch, chunk_name(chunk))
        run = run_config(out, model, adapter, corpus, batch, chunk, samples, args.new_tokens, args.steps,
                         args.micro_batch, args.kl_coef)
        name = f"b{batch}-c{chunk_name(chunk)}"
        fit(run, out / f"{name}.yaml", args.threads)
        results.append((batch, chunk, summarise(json.loads((out / f"{name}.json").read_text()), args.steps)))
    kl_coef = config["model"]["init_args"]["kl_coef"] if args.kl_coef is None else args.kl_coef
    print(table(results, samples, args.new_tokens, args.steps, kl_coef))
    for line in comparisons(results):
        print(line)
    for batch, chunk, r in results:
        extra = f", peak at {r['peak_op']}" if r.get("peak_op") else ""
        print(f"B {batch} chunk {chunk_name(chunk)}: {r['rows']} rows, {r['renders']} programs rendered a step, "
              f"longest prompt {r['prompt_tokens']} tokens, answers {r['tokens']} tokens, RSS at train start "
              f"{r['rss_at_start'] / MIB:,.0f} MiB, live at step start {r.get('live_start', 0) / MIB:,.1f} MiB{extra}")
    print(f"torch {torch.__version__}, device {results[0][2]['device']}, corpus {corpus} ({n_train} programs per "
          f"language, {', '.join(languages)}), wall {time.perf_counter() - started:.0f} s")
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
