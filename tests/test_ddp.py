"""ViRL under DDP on the CPU: 2 gloo processes through Lightning's own `ddp` strategy, then resume.

The run is `python main.py fit --config ...` in a subprocess, as a user starts it: Lightning's
ddp launcher starts rank 1 by running the same command line again, which it cannot do from
inside pytest. Two callbacks from this file travel in the config by class_path:

- `AnswerKey`, between sampling and rendering, swaps some sampled answers for the prompt's
  reference program, so every group's rewards are known: on rank 0 one sample per prompt (each
  group's rewards differ), on rank 1 every sample (each group's rewards tie). Gathered, half the
  groups tie; a rank that normalised alone would log 0 or 1.
- `RankProbe` records, per rank, what that rank sampled, rendered and logged, its trainable
  weights, and every file it opened for writing under the run folder (a Python audit hook), and
  writes it to rank{R}.json.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from callbacks.rollout import RolloutSampler

ROOT = Path(__file__).resolve().parents[1]
B, G = 2, 2  # prompts per rank, samples per prompt: 2 ranks x 2 prompts x 2 samples = 8 rollouts per step


def weights_sha(module) -> str:
    """A digest of the trainable (LoRA) tensors, in parameter order."""
    weights = torch.cat([p.detach().reshape(-1).cpu() for p in module.trainable_parameters()])
    return hashlib.sha256(weights.numpy().tobytes()).hexdigest()


class AnswerKey(RolloutSampler):
    """A sampler that then replaces sampled answers with the prompt's reference program: rank 0
    the first sample of each prompt, rank 1 all of them."""

    def sample_chunk(self, module, chunk):
        done = super().sample_chunk(module, chunk)
        self.sampled_texts = list(done.texts)  # what the policy wrote (one chunk per step here), for the probe
        for n in range(len(done.texts)):
            if module.global_rank == 1 or n % self.num_samples == 0:
                done.texts[n] = chunk.answers[n // self.num_samples]
        return done


class RankProbe(L.Callback):
    """Per rank: prompts, samples, renders, rewards and logged group statistics of each step and
    the trainable weights at the end (rank{R}.json, at teardown); every file or folder it opened
    for writing, created or renamed under `watch` (rank{R}.writes.json, at exit, after the
    logger's last flush). Writes from native code (safetensors, C++) are not seen; each writer
    here also writes a file from Python (adapter_config.json beside the safetensors)."""

    def __init__(self, out_dir: str, watch: str):
        self.out_dir = Path(out_dir)
        self.watch = os.path.abspath(watch)
        self.writes: set[str] = set()
        self.steps: list[dict] = []
        self.record: dict = {}
        sys.addaudithook(self._audit)  # per process: each rank builds its own probe
        atexit.register(self._dump_writes)

    def _audit(self, event: str, args) -> None:
        if event == "open":  # open(), os.open(): (path, mode, flags)
            path, mode, flags = args
            if not (any(c in (mode or "") for c in "wax+") or (flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
                return
        elif event in ("os.rename", "os.replace"):  # (src, dst, src_dir_fd, dst_dir_fd)
            path = args[1]
        elif event == "os.mkdir":  # (path, mode, dir_fd)
            path = args[0]
        else:
            return
        if isinstance(path, (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(path))
            if path.startswith(self.watch + os.sep):
                self.writes.add(os.path.relpath(path, self.watch))

    def _dump_writes(self) -> None:
        if "rank" in self.record:
            path = self.out_dir / f"rank{self.record['rank']}.writes.json"
            path.write_text(json.dumps(sorted(self.writes)))

    def on_train_start(self, trainer, module) -> None:
        self.record.update(rank=trainer.global_rank, world_size=trainer.world_size, start_step=trainer.global_step,
                           start_sha=weights_sha(module), strategy=type(trainer.strategy).__name__,
                           backend=str(torch.distributed.get_backend()))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        rollout = outputs["rollout"]
        self.steps.append(dict(
            step=trainer.global_step,
            ids=list(batch.ids),
            answers=list(batch.answers),
            sampled=list(module.pipeline.sampler.sampled_texts),
            rendered_codes=list(rollout.codes),
            render_ok=[r.ok for r in rollout.renders],
            render_jobs=rollout.render_jobs,
            overall=rollout.rewards.overall.view(-1, rollout.group_size).tolist(),  # [B, G] this rank's
            visual=rollout.rewards.visual.view(-1, rollout.group_size).tolist(),
            frac_reward_zero_std=float(trainer.callback_metrics["train/frac_reward_zero_std"]),
        ))

    def teardown(self, trainer, module, stage: str) -> None:
        self.record.update(end_step=trainer.global_step, steps=self.steps, weights_sha=weights_sha(module))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.record, indent=1))


def ddp_config(tmp_path: Path, tiny_model: Path, corpus: Path, probe_dir: Path, max_steps: int) -> Path:
    """virl_config on 2 CPU processes: a fresh LoRA, svg prompts only, short answers, a probe."""
    from tests.test_virl import virl_config

    rows = [json.loads(line) for line in (corpus / "rl_train.jsonl").read_text().splitlines()]
    rows = [dict(row, images=[str(corpus / image) for image in row["images"]]) for row in rows if row["language"] == "svg"]
    (corpus_svg := tmp_path / "rl_train_svg.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = yaml.safe_load(virl_config(tmp_path, tiny_model, corpus, adapter="unused").read_text())
    run = tmp_path / "run"
    trainer = config["trainer"]
    trainer.update(accelerator="cpu", devices=2, strategy="ddp", max_steps=max_steps)
    config["sampler"]["class_path"] = "tests.test_ddp.AnswerKey"
    config["sampler"]["init_args"].update(num_samples=G, max_new_tokens=8)  # the answers that count come from AnswerKey
    config["render"]["init_args"].update(workers=1)  # per rank
    trainer["callbacks"].append({"class_path": "tests.test_ddp.RankProbe", "init_args": {"out_dir": str(probe_dir), "watch": str(run)}})
    model = config["model"]["init_args"]
    model["backbone"]["adapter"] = None  # fresh LoRA: no SFT run needed, the rewards come from AnswerKey
    model.update(kl_coef=0.0, micro_batch_size=B * G)
    config["data"].update(batch_size=B, train=str(corpus_svg))
    path = tmp_path / f"virl_ddp_{probe_dir.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fit(config: Path, *args: str, timeout: float = 300) -> str:
    """Run `main.py fit` (rank 0, which launches rank 1); return its output, fail on error or hang."""
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"  # two ranks, each with its render worker, share the machine's cores
    proc = subprocess.Popen([sys.executable, "main.py", "fit", "--config", str(config), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the session holds both ranks and their render workers
        out, _ = proc.communicate()
        raise AssertionError(f"DDP run hung for {timeout}s:\n{out[-6000:]}")
    errors = "\n".join(line for line in out.splitlines() if "Error" in line)
    assert proc.returncode == 0, f"DDP run failed ({proc.returncode}):\n{out[-6000:]}\n\nerror lines:\n{errors}"
    return out


def read_ranks(probe_dir: Path) -> list[dict]:
    ranks = [json.loads((probe_dir / f"rank{r}.json").read_text()) for r in range(2)]
    for r, rank in enumerate(ranks):
        rank["writes"] = json.loads((probe_dir / f"rank{r}.writes.json").read_text())
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    return ranks


def frac_zero_std(groups: list[list[float]]) -> float:
    from vinci.grpo import frac_zero_std as frac

    return frac(torch.tensor(groups))


def test_virl_runs_under_ddp_on_two_cpu_processes_and_resumes(tmp_path, tiny_model, tiny_corpus):
    from vinci.reward.format import extract_code

    run = tmp_path / "run"
    fit(ddp_config(tmp_path, tiny_model, tiny_corpus, tmp_path / "first", max_steps=2))
    first = read_ranks(tmp_path / "first")
    assert all(r["strategy"] == "DDPStrategy" and r["backend"] == "gloo" for r in first)
    assert [r["start_step"] for r in first] == [0, 0] and [r["end_step"] for r in first] == [2, 2]

    # Each rank samples and renders its own prompts.
    for zero, one in zip(first[0]["steps"], first[1]["steps"], strict=True):
        assert len(zero["ids"]) == len(one["ids"]) == B
        assert not set(zero["ids"]) & set(one["ids"]), "both ranks drew the same prompts"
        for rank in (zero, one):
            assert len(rank["sampled"]) == len(rank["render_ok"]) == B * G
            # the programs rendered are this rank's reference answers, and each render scores
            # against this rank's own reference image: a swapped image would not score ~1
            for b, answer in enumerate(rank["answers"]):
                assert rank["rendered_codes"][b * G] == extract_code(answer, "svg")
                assert rank["render_ok"][b * G] and rank["visual"][b][0] > 0.95, rank["visual"]
        # the ranks sample from their own random streams: a random policy that drew the same
        # numbers would write the same answers to both ranks' prompts
        assert zero["sampled"] != one["sampled"]
        programs = len(set(one["answers"]))  # G copies of one program render once
        assert zero["render_jobs"] >= len(set(zero["answers"])) and one["render_jobs"] == programs

    # Rewards are gathered before the group statistics: rank 0's groups all vary, rank 1's all
    # tie; each rank logs the share of tied groups over both ranks' groups.
    for zero, one in zip(first[0]["steps"], first[1]["steps"]):
        assert frac_zero_std(zero["overall"]) == 0.0 and frac_zero_std(one["overall"]) == 1.0
        union = frac_zero_std(zero["overall"] + one["overall"])
        assert union == 0.5
        assert zero["frac_reward_zero_std"] == one["frac_reward_zero_std"] == union
    # ... and the gradients are averaged: rank 1's advantages are all 0, yet it ends with rank 0's weights
    assert first[0]["weights_sha"] == first[1]["weights_sha"]

    # Only rank 0 writes adapters, grids, TensorBoard logs and checkpoints.
    assert first[1]["writes"] == [], f"rank 1 wrote {first[1]['writes']}"
    written = first[0]["writes"]
    assert any(p.startswith("adapter/") and p.endswith("/adapter_config.json") for p in written)
    assert "checkpoints/last.ckpt" in written and (run / "adapter" / "last" / "adapter_config.json").is_file()
    assert any(p.startswith("grids/") and p.endswith(".png") for p in written)
    (events,) = run.rglob("events.out.tfevents.*")
    assert str(events.relative_to(run)) in written
    from tests.test_virl import _scalars

    assert _scalars(run, "train/frac_reward_zero_std") == [0.5, 0.5]
    # the reward scalars cover both ranks' rows (rank 0's alone average 0.5, rank 1's 1.0)
    means = [sum(sum(zero["overall"] + one["overall"], [])) / (2 * B * G) for zero, one in zip(first[0]["steps"], first[1]["steps"])]
    assert _scalars(run, "reward/overall_mean") == pytest.approx(means) and means == pytest.approx([0.75, 0.75])
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2

    # `--ckpt_path last` resumes both ranks from the first run's last.ckpt.
    fit(ddp_config(tmp_path, tiny_model, tiny_corpus, tmp_path / "second", max_steps=4), "--ckpt_path", "last")
    second = read_ranks(tmp_path / "second")
    assert [r["start_step"] for r in second] == [2, 2] and [r["end_step"] for r in second] == [4, 4]
    assert [len(r["steps"]) for r in second] == [2, 2]
    assert [r["start_sha"] for r in second] == [first[0]["weights_sha"]] * 2  # both ranks load last.ckpt's LoRA
    assert second[0]["weights_sha"] == second[1]["weights_sha"] != first[0]["weights_sha"]
    assert second[1]["writes"] == [] and "checkpoints/last.ckpt" in second[0]["writes"]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
