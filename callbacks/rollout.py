"""RolloutSampler: how ViRL draws its answers (G per prompt, a chunk of prompts at a time).

The module's step calls it (`ViRLModule.sample`); it holds the sampling settings and the
per-rank random stream. One `generate` call covers `prompts_per_generation` prompts x G
samples, so that chunk, not the rollout batch, sets the KV cache: a rollout batch of 64
prompts sampled 8 at a time needs the memory of 8. What a chunk produced goes back to the host.

Sampling runs with no grad, in eval mode, with the KV cache on and left-padded prompts, also
when training uses QLoRA and gradient checkpointing (vinci.generation.sample handles both).
Validation during fit answers each held-out prompt once, greedily, through `answer`.

Under DDP, Lightning seeds every rank alike, so every rank would draw its samples from the same
random stream: different prompts, but the same draws, which ties the ranks' samples together
(a random policy writes the same answer to every rank's prompts). At train start each rank
therefore reseeds from (the global seed, its rank), as `seed_everything(workers=True)` does
for data workers. A single process keeps its stream untouched.
"""

from __future__ import annotations

import os
from typing import Literal, Optional

import lightning as L
import numpy as np
import torch

from vinci.data.collate import RLBatch
from vinci.engines.vllm_client import VLLMSettings
from vinci.generation import Completions, sample
from vinci.rollout import to_device


def rank_seed(seed: int, rank: int) -> int:
    """A seed for one rank's stream, distinct per (seed, rank)."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)  # < 2**63


class RolloutSampler(L.Callback):
    def __init__(
        self,
        num_samples: int = 8,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 1024,
        prompts_per_generation: Optional[int] = None,
        min_new_tokens: int = 0,
        engine: Literal["hf", "vllm"] = "hf",
        vllm: Optional[VLLMSettings] = None,
    ):
        """
        Args:
            num_samples: G, programs sampled per prompt (the GRPO group).
            temperature: sampling temperature; the policy's log-probs use the same one.
            top_p: nucleus sampling threshold (1.0 = off).
            max_new_tokens: longest answer; generation also stops at EOS.
            prompts_per_generation: prompts per `generate` call (each x G rows); None = the whole
                rollout batch at once. Sets the KV cache; what is sampled does not depend on it.
            min_new_tokens: EOS is unsampleable before this many tokens (0 = off); a memory check
                sets it to max_new_tokens so that every answer is as long as a random policy's.
            engine: what samples: "hf" (transformers `generate` on the training model) or "vllm"
                (a vLLM worker process in its own environment, given the policy's LoRA after every
                optimizer step; vinci.engines). Validation during fit answers with the same engine.
            vllm: the vLLM worker's settings (interpreter, KV cache size, sleep, timeouts).
        """
        if num_samples < 2:
            raise ValueError(f"num_samples must be >= 2 for group-normalised advantages, got {num_samples}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if prompts_per_generation is not None and prompts_per_generation < 1:
            raise ValueError(f"prompts_per_generation must be >= 1 (or null for the whole batch), got {prompts_per_generation}")
        if not 0 <= min_new_tokens <= max_new_tokens:
            raise ValueError(f"min_new_tokens must be in [0, max_new_tokens={max_new_tokens}], got {min_new_tokens}")
        self.num_samples = num_samples
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self.prompts_per_generation = prompts_per_generation
        self.min_new_tokens = min_new_tokens
        if engine not in ("hf", "vllm"):
            raise ValueError(f"sampler.engine must be hf or vllm, got {engine!r}")
        self.engine = engine
        self.vllm = vllm or VLLMSettings()
        self.rollouts = None  # vinci.engines.vllm_sampling.VLLMRollouts, started at the first rollout

    def on_train_start(self, trainer, module) -> None:
        if trainer.world_size > 1:
            seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))
            torch.manual_seed(rank_seed(seed, trainer.global_rank))

    def teardown(self, trainer, module, stage: str) -> None:
        self.close()

    def on_exception(self, trainer, module, exception: BaseException) -> None:
        self.close()  # Lightning skips teardown after an exception; the worker holds memory

    def close(self) -> None:
        if self.rollouts is not None:
            self.rollouts.close()
            self.rollouts = None

    def vllm_rollouts(self, module):
        """The vLLM worker of this process, started on first use (after configure_model)."""
        if self.rollouts is None:
            from vinci.engines.vllm_sampling import VLLMRollouts

            self.rollouts = VLLMRollouts.for_module(self.vllm, module, self.max_new_tokens)
        return self.rollouts

    def rollout_done(self) -> None:
        """Sampling for this step is over: a GPU worker sleeps while the trainer scores and updates."""
        if self.rollouts is not None:
            self.rollouts.sleep()

    def chunks(self, num_prompts: int) -> list[tuple[int, int]]:
        """[(start, stop)] prompt ranges, one per generate call."""
        size = self.prompts_per_generation or num_prompts
        return [(start, min(num_prompts, start + size)) for start in range(0, num_prompts, size)]

    def sample_chunk(self, module, chunk: RLBatch) -> Completions:
        """G answers to each prompt of `chunk`, rows prompt-major; tensors back on the host."""
        if module.temperature != self.temperature:
            raise ValueError(
                f"the sampler draws at temperature {self.temperature} but the module scores log-probs at "
                f"{module.temperature}: give ViRLModule(temperature=...) the sampler's (the CLI links them)"
            )
        if self.engine == "vllm":
            return self.vllm_rollouts(module).sample(module, chunk, self.num_samples, self.max_new_tokens,
                                                     self.min_new_tokens, True, self.temperature, self.top_p)
        done = sample(
            module.model,
            module.processor,
            to_device(chunk.inputs, module.device),
            num_samples=self.num_samples,
            max_new_tokens=self.max_new_tokens,
            min_new_tokens=self.min_new_tokens,
            do_sample=True,
            temperature=self.temperature,
            top_p=self.top_p,
        )
        return to_host(done)

    def answer(self, module, chunk: RLBatch) -> Completions:
        """One greedy answer per prompt (G = 1), as benchmarks decode: validation during fit."""
        if self.engine == "vllm":
            return self.vllm_rollouts(module).sample(module, chunk, 1, self.max_new_tokens, 0, False, 1.0, 1.0)
        done = sample(module.model, module.processor, to_device(chunk.inputs, module.device),
                      num_samples=1, max_new_tokens=self.max_new_tokens, do_sample=False)
        return to_host(done)


def to_host(done: Completions) -> Completions:
    """The completion tensors in host memory, where the rollout waits for its update."""
    logp = None if done.logp is None else done.logp.cpu()
    return Completions(done.sequences.cpu(), done.completion_ids.cpu(), done.completion_mask.cpu(), done.texts,
                       done.prompt_length, logp)
