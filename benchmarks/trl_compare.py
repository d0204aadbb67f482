"""vinci's ViRL step against TRL's GRPOTrainer on the same work: update memory and seconds per step.

    pip install -r benchmarks/requirements.txt            # TRL, for this benchmark only
    python -m benchmarks.trl_compare                      # 2 prompts x 4 samples x 256 tokens, 2 timed steps
    python -m benchmarks.trl_compare --prompts 1 --new-tokens 512   # 2 x 512 completion tokens per micro-batch
    python -m benchmarks.trl_compare --prompts 8 32 64 --chunk 8 --plant --vocab 0 --new-tokens 32 \
        --micro-batch 16 --languages python svg html latex  # seconds per rollout at three rollout batches

One model, one batch of work, two trainers. The model is the embedded tiny Qwen2-VL with its
tied embedding and output head resized to `--vocab` words (Qwen's 151,936), because the output
vocabulary is what dominates the update's memory (`--vocab 0` keeps its own: its BPE
tokenizer learns about 800 words of the 2,048 it may). Its end-of-sequence id is the video
placeholder, which both samplers suppress, so every completion is `--new-tokens` long: the
worst case a random policy writes. Both trainers get the same B prompt rows of the synthetic
corpus (svg unless `--languages`, the same fitted images and chat template), sample G
completions each at T = 1.0, score them with the same reward (vinci's: render in the sandboxed pool, 0.9 x pixel patch
similarity + 0.1 x format; for TRL it is wrapped as a reward function), and make one optimizer
step over all B x G rows in micro-batches of `--micro-batch` rows: a fresh LoRA of the same
rank, alpha and target regex, dropout 0, no KL, clipped ratio 0.2 / 0.3, token-mean loss,
group-normalised advantages, AdamW at a constant rate, gradient clip 1.0, fp32 (TRL's bf16
default off), sdpa, gradient checkpointing off (TRL's default on) unless `--gradient-checkpointing`
turns it on for both. vinci runs through `main.py fit` on configs/virl.yaml retargeted; the
values TRL needs are read from that same config, so there is one source for each.

The rollout batch (`--prompts`, several for one run each) is vinci's `data.batch_size`, sampled
`--chunk` prompts per generate call (`sampler.prompts_per_generation`; default the whole batch),
each chunk's programs rendering while later chunks sample. For TRL it is the generation batch:
`generation_batch_size` = B x G rows sampled in one generate call and scored together, split into
`per_device_train_batch_size` = `--micro-batch` rows, with `gradient_accumulation_steps` (=
`steps_per_generation`) over all of them, so one optimizer step per rollout batch on both sides.
A random policy writes no program, so nothing renders; `--plant` puts each prompt's reference
program in place of its group's first completion on both sides (benchmarks.planted), so B
programs a step go through the sandboxed renderers and the reward (`--languages` sets their
mix; as many prompts in each). With more than one batch, or a chunk, a last table gives seconds
per rollout (one prompt x one sample: s/step / (B x G)) of each side and vinci/TRL throughput.
Each batch's corpus holds exactly B direct rows, so both sides see the same prompts every step.

Each trainer runs in its own fresh process, and the two take turns step by step (vinci first
on even steps, TRL first on odd ones), so load from anything else on the machine falls on both
alike; each uses `--threads` intra-op threads. Step 0 is the warm-up; it is also the step whose
update memory is measured. The steps after it are timed, with nothing instrumented.

- **peak update MiB**: live-tensor peak of the update phase (log-prob forward, backward,
  clip, optimizer step): the most bytes of tensor storage created in that phase and alive at
  once, counted by a TorchDispatchMode over every aten op. Memory from before the phase
  (weights, the rollout) and an op's internal scratch space are not in it.
- **peak RSS MiB**: the process's peak resident set over the whole run (getrusage): loading,
  sampling, reward and update together.
- **s/step**: mean wall time of the timed steps, sampling to optimizer step; `sample` and
  `update` are its two model phases; **reward s** is the time the trainer waited on renders
  and scored them (vinci: `render_exposed` + `score_exposed`, what its scorer thread had left
  after sampling; TRL: its reward function); the rest is
  glue. **CPU s/step** is
  the trainer process's CPU time over the same steps: the work done, which other load on a
  shared machine does not inflate (render workers are other processes and not in it).

What is not the same, because it is how each works rather than a setting: on a CPU, TRL's
fused head scores every position, prompt included (it scores completion positions only on
GPUs with Triton), vinci only completion positions; TRL has no dual-clip (vinci's 3.0 cannot
bind on one on-policy update, where every ratio is 1); advantage eps is 1e-6 in vinci, 1e-4
in TRL; vinci runs the frozen vision tower once per prompt image in a step (`reuse_vision`, as the
GPU recipes do), TRL once per row in its loss forward. Without `--plant`, a random-weight policy writes no fenced block, so both rewards are 0
and no program reaches the renderer; the update still runs its full forward and backward on
both sides.
vinci's head memory does not grow with the micro-batch (a few [64, V] chunks); TRL's does
(a [tokens, 32768] tile), so with very short completions TRL's update peak can be the lower.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Optional

import lightning as L
import torch
import yaml
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("vinci", "trl")
MIB = 2**20
TURN_TIMEOUT = 1800.0  # seconds one step may take before the benchmark gives up

log = logging.getLogger("trl_compare")


@dataclass
class Work:
    """The work both trainers are given; the parent writes it, each worker reads it."""

    out: str  # work folder: models, corpus, configs, logs, results
    model: str  # the resized model folder
    prompts: int  # B, prompts per step
    samples: int  # G, completions per prompt
    new_tokens: int  # L, tokens every completion writes
    micro_batch: int  # rows per forward/backward
    steps: int  # timed steps after the warm-up
    gradient_checkpointing: bool
    corpus: str = ""  # the synthetic corpus folder: exactly `prompts` training rows
    chunk: Optional[int] = None  # vinci's sampler.prompts_per_generation (None = the whole batch)
    plant: bool = False  # both sides: each group's first completion is the prompt's reference program
    languages: tuple[str, ...] = ("svg",)  # the prompts' target languages, as many prompts in each


# ---- measuring -------------------------------------------------------------------------------
class LivePeak(TorchDispatchMode):
    """Peak bytes of tensor storage created while active and still alive at the same time.

    An op output whose storage is none of the op's inputs' (so not a view, not an in-place
    result) is new; it counts until the storage is freed, which a weakref finalizer reports.
    Backward ops are seen too: on a CPU the autograd engine runs them on the calling thread.
    """

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._counted: set[int] = set()

    def _freed(self, key: int, nbytes: int) -> None:
        self._counted.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = id(storage)
            if key in inputs or key in self._counted:
                continue
            self._counted.add(key)
            self.live += storage.nbytes()
            weakref.finalize(storage, self._freed, key, storage.nbytes())
        self.peak = max(self.peak, self.live)
        return out


class Turn:
    """Step-by-step turns with the parent: wait for its go before a step, report after it."""

    def __init__(self, go_fd: int, done_fd: int):
        self.go_fd, self.done_fd = go_fd, done_fd
        for fd in (go_fd, done_fd):  # render workers and other children must not hold them open
            os.set_inheritable(fd, False)

    def wait(self) -> None:
        if not os.read(self.go_fd, 1):
            raise SystemExit("the benchmark's parent process went away")

    def done(self, seconds: float) -> None:
        os.write(self.done_fd, struct.pack("d", seconds))


class StepProbe:
    """One trainer's step clock and, on `memory_step`, its update phase's live-tensor peak."""

    def __init__(self, turn: Turn, memory_step: int = 0):
        self.turn = turn
        self.memory_step = memory_step
        self.step = 0
        self.steps: list[dict] = []
        self.update_peak: Optional[int] = None
        self._mode: Optional[LivePeak] = None

    def step_begins(self) -> None:
        self.turn.wait()
        self.current = dict(sample=0.0, update=0.0)
        self._update_started: Optional[float] = None
        self._started, self._cpu_started = time.perf_counter(), time.process_time()

    def update_begins(self) -> None:
        if self._update_started is not None:
            return
        self._update_started = time.perf_counter()
        if self.step == self.memory_step:
            self._mode = LivePeak()
            self._mode.__enter__()

    def update_ends(self) -> None:
        if self._update_started is None:
            return
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self.update_peak = self._mode.peak
            self._mode = None
        self.current["update"] += time.perf_counter() - self._update_started
        self._update_started = None

    def step_ends(self, **extra) -> None:
        self.update_ends()
        self.current.update(seconds=time.perf_counter() - self._started,
                            cpu_seconds=time.process_time() - self._cpu_started, **extra)
        self.steps.append(self.current)
        self.step += 1
        self.turn.done(self.current["seconds"])

    def record(self) -> dict:
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
        return dict(steps=self.steps, update_peak=self.update_peak, peak_rss=peak_rss)


# ---- vinci's side: main.py fit on configs/virl.yaml ------------------------------------------
class VinciProbe(L.Callback):
    """Turns, step clock and update memory for `main.py fit`; first in trainer.callbacks."""

    def __init__(self, record: str, go_fd: int, done_fd: int):
        self.path = Path(record)
        self.probe = StepProbe(Turn(go_fd, done_fd))

    def setup(self, trainer, module, stage: str) -> None:
        update = getattr(module, "update", None)  # ViRLModule's update phase: log-prob forward, backward, step
        if not callable(update):
            raise TypeError(f"{type(module).__name__} has no update phase to measure; this benchmark needs updating")

        def measured_update(*args, **kwargs):
            self.probe.update_begins()
            try:
                return update(*args, **kwargs)
            finally:
                self.probe.update_ends()

        module.update = measured_update  # training_step calls self.update: the instance's wins

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.probe.step_begins()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        rollout = (outputs or {}).get("rollout")  # what ViRLModule.training_step returns
        if rollout is None:
            raise TypeError(f"{type(module).__name__}.training_step returned no rollout; this benchmark needs updating")
        lengths = rollout.completion_mask.sum(dim=1)  # [N]
        prompts = rollout.batch.inputs["attention_mask"].sum(dim=1)  # [B] prompt tokens without padding
        seconds = rollout.seconds
        self.probe.current.update(sample=seconds["sample"], render=seconds.get("render", 0.0),
                                  render_exposed=seconds.get("render_exposed", 0.0),
                                  reward_seconds=seconds.get("score_exposed", 0.0))  # scoring the step waited for
        self.probe.step_ends(
            rows=int(lengths.numel()), tokens=(int(lengths.min()), int(lengths.max())),
            prompt_tokens=int(prompts.max()), reward=float(rollout.rewards.overall.mean()),
            renders=rollout.render_jobs, texts=len(rollout.texts),
        )

    def on_fit_end(self, trainer, module) -> None:
        trainable = sum(p.numel() for p in module.model.parameters() if p.requires_grad)
        self.path.write_text(json.dumps(dict(self.probe.record(), trainable=trainable)))


def vinci_config(work: Work) -> dict:
    """configs/virl.yaml on the resized model and the shared work; also the source of TRL's values."""
    from benchmarks.reproduce import retarget

    out = Path(work.out)
    config = retarget(yaml.safe_load((ROOT / "configs" / "virl.yaml").read_text()), out, "vinci")
    config["trainer"].update(max_steps=1 + work.steps, enable_progress_bar=False)
    config["sampler"]["init_args"].update(num_samples=work.samples, temperature=1.0, top_p=1.0,
                                          max_new_tokens=work.new_tokens, prompts_per_generation=work.chunk)
    if work.plant:
        config["sampler"]["class_path"] = "benchmarks.planted.PlantAnswers"
    init = config["model"]["init_args"]
    init["backbone"].update(model=work.model, embedded=False, adapter=None,
                            gradient_checkpointing=work.gradient_checkpointing,
                            lora=dict(r=16, alpha=32, dropout=0.0))
    init.update(kl_coef=0.0, ppo_epochs=1, micro_batch_size=work.micro_batch, loss_agg="token-mean",
                warmup_ratio=0.0, min_lr_ratio=1.0,  # constant rate, as TRL's "constant"
                reuse_vision=True)  # the tower is frozen here, as in the GPU recipes (virl.yaml's tiny default trains it)
    config["data"]["batch_size"] = work.prompts
    config["data"]["synthetic"].update(dir=work.corpus or str(out / "synth"), n_train=max(2, work.prompts),
                                       n_val=1, n_test=1, languages=list(work.languages))
    return config


def run_vinci(work: Work, go_fd: int, done_fd: int) -> None:
    from benchmarks.reproduce import write_config
    from main import cli_main

    out = Path(work.out)
    config = vinci_config(work)
    probe = dict(class_path="benchmarks.trl_compare.VinciProbe",
                 init_args=dict(record=str(out / "vinci.json"), go_fd=go_fd, done_fd=done_fd))
    config["trainer"]["callbacks"] = [probe]  # before the named groups: its step clock starts before the sampler
    cli_main(["fit", "--config", str(write_config(config, out / "vinci.yaml"))])


# ---- TRL's side: GRPOTrainer with the same work ----------------------------------------------
def vinci_reward(pool, encoder: str, format_weight: float, similarity: dict, group_size: int = 0, probe=None):
    """vinci's composite reward as a TRL reward function: one float per completion.

    With `group_size`, the first completion of each group is replaced by its prompt's reference
    program first (benchmarks.planted, as vinci's PlantAnswers sampler does); `probe` gets the
    seconds spent here (render and score) as "reward_seconds"."""
    from benchmarks.planted import plant
    from vinci.reward.format import composite_reward, extract_code, format_reward
    from vinci.reward.similarity import visual_reward
    from vinci.render import RenderJob, RenderResult

    def vinci_composite(prompts, completions, image, language, answer=None, **_) -> list[float]:
        started = time.perf_counter()
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]  # [N]
        if group_size:  # TRL's rows are prompt-major here: G in a row per prompt, shuffled only after scoring
            texts = plant(texts, answer[::group_size], group_size)
        codes = [extract_code(text, lang) for text, lang in zip(texts, language)]  # [N]
        jobs = {(lang, code): None for code, lang in zip(codes, language) if code is not None}  # render each once
        results = dict(zip(jobs, pool.submit([RenderJob(lang, code) for lang, code in jobs]).result()))
        missing = RenderResult.failure("no-output", "no fenced code block in the asked-for language")
        renders = [missing if code is None else results[(lang, code)] for code, lang in zip(codes, language)]
        visual = visual_reward([r.image if r.ok else None for r in renders], image, encoder, **similarity)  # [N]
        rendered = torch.tensor([float(r.ok) for r in renders])  # [N]
        parts = composite_reward(visual.float(), format_reward(texts, language), rendered, format_weight=format_weight)
        if probe is not None:
            probe.current["reward_seconds"] = probe.current.get("reward_seconds", 0.0) + time.perf_counter() - started
            probe.current["renders"] = probe.current.get("renders", 0) + len(jobs)
        return parts.overall.tolist()

    return vinci_composite


def run_trl(work: Work, go_fd: int, done_fd: int) -> None:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from vinci.backbone import load_processor, lora_target_regex
    from vinci.data.collate import prompt_text, user_turn
    from vinci.data.rows import read_rows
    from vinci.inputs import multimodal_token_ids
    from vinci.render import RenderOptions, RenderPool

    out = Path(work.out)
    config = vinci_config(work)  # every value below that vinci also has comes from its config
    init, data = config["model"]["init_args"], config["data"]
    render = config["render"]["init_args"]
    lora = init["backbone"]["lora"]
    probe = StepProbe(Turn(go_fd, done_fd))

    processor = load_processor(work.model)
    model = AutoModelForImageTextToText.from_pretrained(work.model, dtype=torch.float32, attn_implementation="sdpa")
    rows = read_rows(Path(data["synthetic"]["dir"]) / "rl_train.jsonl", schema="rl", min_pixels=data["min_pixels"],
                     max_pixels=data["max_pixels"])
    examples = [rows[i] for i in range(len(rows))]
    dataset = Dataset.from_list([dict(prompt=[user_turn(e.prompt)], image=e.image, language=e.language,
                                      answer=e.answer or "") for e in examples])
    expected = {prompt_text(processor, e.prompt) for e in examples}

    class MeasuredGRPOTrainer(GRPOTrainer):
        def _generate(self, prompts):
            template = self.processing_class.apply_chat_template
            texts = {template(p, add_generation_prompt=True, tokenize=False) for p in prompts}
            if not texts <= expected:
                raise SystemExit(f"TRL's templated prompts differ from vinci's: {sorted(texts - expected)[:1]}")
            started = time.perf_counter()
            result = super()._generate(prompts)
            probe.current["sample"] += time.perf_counter() - started
            prompt_ids, lengths = result[0], [len(ids) for ids in result[1]]
            probe.current.update(rows=len(lengths), tokens=(min(lengths), max(lengths)),
                                 prompt_tokens=max(map(len, prompt_ids)))
            return result

        def _prepare_inputs(self, generation_batch):
            inputs = super()._prepare_inputs(generation_batch)  # sampling and reward, on a step's first micro-batch
            probe.update_begins()
            return inputs

    class Steps(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            probe.step_begins()

        def on_step_end(self, args, state, control, **kwargs):  # after the optimizer step and zero_grad
            probe.step_ends(reward=trainer._metrics["train"]["reward"][-1])

    rows_per_step = work.prompts * work.samples
    if rows_per_step % work.micro_batch:
        raise SystemExit(f"--micro-batch {work.micro_batch} must divide prompts x samples = {rows_per_step}")
    # TRL's rollout batch is its generation batch: B x G rows sampled in one generate call, scored,
    # then split into per_device_train_batch_size micro-batches; gradient accumulation over all of
    # them (steps_per_generation = gradient_accumulation_steps) makes one optimizer step per
    # generation batch, as vinci's one update per rollout batch.
    args = GRPOConfig(
        output_dir=str(out / "trl"), report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True,
        use_cpu=True, bf16=False, fp16=False, seed=config["seed_everything"], dataloader_num_workers=0,
        max_steps=1 + work.steps, per_device_train_batch_size=work.micro_batch,
        generation_batch_size=rows_per_step,  # steps_per_generation follows: rows_per_step // micro_batch
        gradient_accumulation_steps=rows_per_step // work.micro_batch,  # one optimizer step per B x G rows
        gradient_checkpointing=work.gradient_checkpointing,
        num_generations=work.samples, max_completion_length=work.new_tokens, temperature=1.0, top_p=1.0, top_k=0,
        generation_kwargs=dict(suppress_tokens=multimodal_token_ids(model, processor.tokenizer)),  # as vinci samples
        beta=0.0, num_iterations=1, loss_type="dapo", scale_rewards="group", mask_truncated_completions=False,
        epsilon=init["clip_low"], epsilon_high=init["clip_high"], max_grad_norm=init["max_grad_norm"],
        optim="adamw_torch", learning_rate=init["optimizer"]["init_args"]["lr"],
        weight_decay=init["optimizer"]["init_args"]["weight_decay"], lr_scheduler_type="constant", warmup_steps=0,
    )
    peft_config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"], bias="none",
                             target_modules=lora_target_regex(model, include_vision=False))
    similarity = dict(tile_size=init["tile_size"], max_tiles=init["max_tiles"], global_weight=init["global_weight"])
    options = RenderOptions(**render["options"])
    with RenderPool(workers=render["workers"], timeout=render["timeout"], options=options) as pool:
        reward = vinci_reward(pool, init["encoder"], init["format_weight"], similarity,
                              group_size=work.samples if work.plant else 0, probe=probe)
        trainer = MeasuredGRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset,
                                      processing_class=processor, peft_config=peft_config, callbacks=[Steps()])
        if (trainer.args.generation_batch_size, trainer.args.steps_per_generation) != (
                rows_per_step, args.gradient_accumulation_steps):
            raise SystemExit(f"TRL's generation batch is not one rollout batch: {trainer.args.generation_batch_size} "
                             f"rows, {trainer.args.steps_per_generation} steps per generation")
        trainer.train()
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    (out / "trl.json").write_text(json.dumps(dict(probe.record(), trainable=trainable)))


# ---- the parent: build once, run both, take turns, print ----------------------------------
def build(out: Path, vocab: int, prompts: list[int], languages: list[str] = ("svg",),
          base: Optional[Path] = None) -> tuple[Path, dict[int, Path], int]:
    """The model (generation never ends before max_new_tokens; resized to `vocab` words unless 0)
    and one corpus per rollout batch, of exactly that many training rows, the same number in
    each language; and the model's vocabulary."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vinci.data.rows import read_rows
    from vinci.data.synth import build_corpus
    from vinci.tiny import TinySpec, build_tiny_vlm

    tiny = base or build_tiny_vlm(out / "tiny", TinySpec())  # the embedded default, as `embedded: true` builds it
    model = AutoModelForImageTextToText.from_pretrained(tiny)
    processor = AutoProcessor.from_pretrained(tiny)
    if vocab:
        model.resize_token_embeddings(vocab, mean_resizing=False)
    never = model.config.video_token_id  # suppressed while sampling, so never drawn
    model.generation_config.eos_token_id = never
    processor.tokenizer.eos_token = processor.tokenizer.convert_ids_to_tokens(never)
    folder = out / f"tiny-{vocab or 'own'}"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    corpora = {}
    for n in sorted(set(prompts)):
        per_language = max(2, n) // len(languages)  # build_corpus's sizes are programs per language
        corpora[n] = build_corpus(out / f"synth-{n}", seed=0, n_train=per_language, n_val=1, n_test=1,
                                  languages=list(languages), refine_fraction=0.0)  # direct rows only: B rows
        rows = len(read_rows(corpora[n] / "rl_train.jsonl", schema="rl"))
        if rows != max(2, n):  # a program that failed to render leaves a row out: the batch would be smaller
            raise SystemExit(f"the corpus in {corpora[n]} has {rows} training rows, not {n}")
    return folder, corpora, model.get_output_embeddings().weight.shape[0]


def start(side: str, work_file: Path, log: Path, threads: int):
    """A worker process for one side, and the parent's ends of its two turn pipes."""
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [sys.executable, "-m", "benchmarks.trl_compare", "--worker", side, "--work", str(work_file),
               "--fds", str(go_r), str(done_w)]
    with open(log, "w") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                   pass_fds=(go_r, done_w))
    os.close(go_r)
    os.close(done_w)
    return process, go_w, done_r


def failed(side: str, log: Path) -> SystemExit:
    tail = "\n".join(log.read_text().splitlines()[-25:])
    return SystemExit(f"the {side} worker failed; see {log}:\n{tail}")


def take_turns(work: Work, out: Path, threads: int) -> dict[str, dict]:
    """Run both workers, one step at a time each; their result records."""
    work_file = out / "work.json"
    work_file.write_text(json.dumps(asdict(work)))
    logs = {side: out / f"{side}.log" for side in SIDES}
    workers = {side: start(side, work_file, logs[side], threads) for side in SIDES}
    try:
        for step in range(1 + work.steps):
            for side in SIDES if step % 2 == 0 else SIDES[::-1]:
                process, go, done = workers[side]
                try:
                    os.write(go, b".")
                except BrokenPipeError:
                    raise failed(side, logs[side]) from None
                if not select.select([done], [], [], TURN_TIMEOUT)[0]:
                    raise SystemExit(f"the {side} worker took over {TURN_TIMEOUT:.0f} s for step {step}; "
                                     f"see {logs[side]}")
                report = os.read(done, 8)
                if len(report) != 8:
                    raise failed(side, logs[side])
                kind = "warm-up" if step == 0 else "timed"
                log.info("step %d/%d (%s) %s: %.1f s", step, work.steps, kind, side, struct.unpack("d", report)[0])
        for side, (process, go, done) in workers.items():
            if process.wait() != 0:
                raise failed(side, logs[side])
    finally:
        for process, go, done in workers.values():
            if process.poll() is None:
                process.kill()
            os.close(go)
            os.close(done)
    return {side: json.loads((out / f"{side}.json").read_text()) for side in SIDES}


def table(work: Work, results: dict[str, dict], vocab: int) -> str:
    def timed(side: str, key: str) -> float:
        steps = results[side]["steps"][1:]
        return sum(s.get(key, 0.0) for s in steps) / len(steps)

    rows = {}
    for side in SIDES:
        r = results[side]
        rows[side] = [r["update_peak"] / MIB, r["peak_rss"] / MIB, timed(side, "seconds"), timed(side, "cpu_seconds"),
                      timed(side, "sample"), timed(side, "reward_seconds") + timed(side, "render_exposed"),
                      timed(side, "update")]
    rows["vinci/TRL"] = [v / t if t else float("nan") for v, t in zip(rows["vinci"], rows["trl"])]
    head = ["peak update MiB", "peak RSS MiB", "s/step", "CPU s/step", "sample s", "reward s", "update s"]
    chunk = f"vinci samples {work.chunk or work.prompts} prompts per generate call, TRL all {work.prompts}"
    lines = [
        f"one GRPO step: {work.prompts} prompts x {work.samples} samples x {work.new_tokens} new tokens, "
        f"micro-batch {work.micro_batch} rows, vocabulary {vocab:,}, {chunk}, "
        f"{'planted answers' if work.plant else 'no planted answers'}, {work.steps} timed steps after a warm-up, "
        f"{'/'.join(work.languages)} prompts, "
        "turn by turn",
        f"| {'':9} | " + " | ".join(head) + " |",
        "|" + "---|" * (len(head) + 1),
    ]
    for name, values in rows.items():
        cells = [f"{v:.2f}" if name == "vinci/TRL" else f"{v:,.0f}" if i < 2 else f"{v:.1f}"
                 for i, v in enumerate(values)]
        lines.append(f"| {name:9} | " + " | ".join(f"{c:>{len(h)}}" for c, h in zip(cells, head)) + " |")
    for side in SIDES:
        s = results[side]["steps"]
        lines.append(f"{side}: rows/step {s[0]['rows']}, completion tokens {tuple(s[0]['tokens'])}, "
                     f"prompt tokens {s[0]['prompt_tokens']}, programs rendered/step {s[-1].get('renders', 0)}, "
                     f"trainable {results[side]['trainable']:,}, "
                     f"mean reward {sum(x['reward'] for x in s) / len(s):.3f}")
    pairs = list(zip(results["vinci"]["steps"][1:], results["trl"]["steps"][1:]))
    lines.append("vinci/TRL by timed step, s/step (CPU s/step): "
                 + ", ".join(f"{v['seconds'] / t['seconds']:.2f} ({v['cpu_seconds'] / t['cpu_seconds']:.2f})"
                             for v, t in pairs))
    verdict = "yes" if results["vinci"]["update_peak"] <= results["trl"]["update_peak"] else "NO"
    lines.append(f"vinci's peak update memory <= TRL's: {verdict}")
    return "\n".join(lines)


def per_rollout(work: Work, results: dict[str, dict]) -> dict[str, float]:
    """Seconds per rollout (one prompt x one sample) of the timed steps, wall and CPU, per side."""
    rollouts = work.prompts * work.samples
    out = {}
    for side in SIDES:
        steps = results[side]["steps"][1:]
        out[side] = sum(s["seconds"] for s in steps) / len(steps) / rollouts
        out[f"{side}_cpu"] = sum(s["cpu_seconds"] for s in steps) / len(steps) / rollouts
    out["ratio"] = out["trl"] / out["vinci"]  # vinci's throughput over TRL's
    out["cpu_ratio"] = out["trl_cpu"] / out["vinci_cpu"]
    return out


def throughput_table(runs: list[tuple[Work, dict[str, float]]]) -> str:
    """One row per rollout batch: seconds per rollout of each side and vinci/TRL throughput."""
    head = ["rollouts/step", "vinci s/rollout", "TRL s/rollout", "vinci/TRL throughput",
            "vinci CPU s/rollout", "TRL CPU s/rollout", "CPU ratio"]
    lines = ["| prompts | " + " | ".join(head) + " |", "|" + "---|" * (len(head) + 1)]
    for work, r in runs:
        cells = [f"{work.prompts * work.samples}", f"{r['vinci']:.4f}", f"{r['trl']:.4f}", f"{r['ratio']:.2f}x",
                 f"{r['vinci_cpu']:.4f}", f"{r['trl_cpu']:.4f}", f"{r['cpu_ratio']:.2f}x"]
        lines.append(f"| {work.prompts:>7} | " + " | ".join(f"{c:>{len(h)}}" for c, h in zip(cells, head)) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, nargs="+", default=[2],
                        help="B, prompts per step (the rollout batch); several: one run each, and a throughput table")
    parser.add_argument("--chunk", type=int, default=None,
                        help="vinci's sampler.prompts_per_generation (default: the whole rollout batch at once, "
                             "as TRL samples its generation batch)")
    parser.add_argument("--plant", action="store_true",
                        help="both sides put each prompt's reference program in place of its group's first "
                             "completion, so B programs a step are rendered and scored (benchmarks.planted)")
    parser.add_argument("--languages", nargs="+", default=["svg"],
                        help="the prompts' target languages, as many prompts in each (svg renders fastest; "
                             "configs/virl.yaml trains on python svg html latex)")
    parser.add_argument("--samples", type=int, default=4, help="G, completions per prompt")
    parser.add_argument("--new-tokens", type=int, default=256, help="tokens every completion writes")
    parser.add_argument("--micro-batch", type=int, default=2, help="rows per forward/backward, both trainers")
    parser.add_argument("--steps", type=int, default=2, help="timed steps after the warm-up")
    parser.add_argument("--vocab", type=int, default=151936,
                        help="output vocabulary of the model (Qwen: 151,936); 0 = the embedded model's own")
    parser.add_argument("--base", default=None, help="the model directory to start from (default: build the "
                        "embedded default in the work folder)")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads per trainer; 0 = torch's default (one per core). On a shared machine "
                             "one is steadier and faster: a descheduled OpenMP thread stalls every small op")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="both trainers recompute activations")
    parser.add_argument("--out", default=None,
                        help="work folder, kept whole (default: a temporary one, without the models afterwards)")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)  # internal: run one side
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--fds", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        work = Work(**json.loads(Path(args.work).read_text()))
        (run_vinci if args.worker == "vinci" else run_trl)(work, *args.fds)
        return
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    for prompts in args.prompts:
        if max(2, prompts) % len(args.languages):
            parser.error(f"--prompts {prompts} must be a multiple of the {len(args.languages)} --languages")
        if (prompts * args.samples) % args.micro_batch:
            parser.error(f"--micro-batch {args.micro_batch} must divide prompts x samples = {prompts * args.samples}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    out = Path(args.out or tempfile.mkdtemp(prefix="trl-compare-")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    model, corpora, vocab = build(out, args.vocab, args.prompts, args.languages,
                                  Path(args.base).resolve() if args.base else None)
    runs = []
    for prompts in args.prompts:
        folder = out / f"b{prompts}" if len(args.prompts) > 1 else out
        folder.mkdir(parents=True, exist_ok=True)
        work = Work(out=str(folder), model=str(model), prompts=prompts, samples=args.samples,
                    new_tokens=args.new_tokens, micro_batch=args.micro_batch, steps=args.steps,
                    gradient_checkpointing=args.gradient_checkpointing, corpus=str(corpora[prompts]),
                    chunk=args.chunk, plant=args.plant, languages=tuple(args.languages))
        log.info("rollout batch %d prompts x %d samples", prompts, args.samples)
        results = take_turns(work, folder, args.threads)
        print(table(work, results, vocab), flush=True)
        runs.append((work, per_rollout(work, results)))
    if args.out is None:  # keep the logs, configs and records; the models are 100+ MiB
        shutil.rmtree(out / "tiny", ignore_errors=True)
        shutil.rmtree(model)
    if len(runs) > 1 or args.chunk:
        print(f"seconds per rollout (one prompt x one sample), {args.samples} samples x {args.new_tokens} tokens, "
              f"vinci chunk {args.chunk or 'the whole batch'}, {'planted answers' if args.plant else 'no renders'}:")
        print(throughput_table(runs))
    print(f"trl {version('trl')}, transformers {version('transformers')}, torch {torch.__version__}; "
          f"logs and configs in {out}; "
          f"wall {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
