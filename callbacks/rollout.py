"""RolloutSampler: draw G programs per prompt before each ViRL training step.

Sampling runs with no grad, in eval mode, with the KV cache on and left-padded prompts, also
when training uses QLoRA and gradient checkpointing (vinci.generation.sample handles both).
The samples go to `module.rollout`, where the render callback and the step pick them up. On
validation batches during fit it answers each held-out prompt once, greedily, for the same path.

Under DDP, Lightning seeds every rank alike, so every rank would draw its samples from the same
random stream: different prompts, but the same draws, which ties the ranks' samples together
(a random policy writes the same answer to every rank's prompts). At train start each rank
therefore reseeds from (the global seed, its rank), as `seed_everything(workers=True)` does
for data workers. A single process keeps its stream untouched.
"""

from __future__ import annotations

import os
import time

import lightning as L
import numpy as np
import torch

from vinci.generation import sample
from vinci.rollout import Rollout


def rank_seed(seed: int, rank: int) -> int:
    """A seed for one rank's stream, distinct per (seed, rank)."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)  # < 2**63


class RolloutSampler(L.Callback):
    def __init__(self, num_samples: int = 8, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 1024):
        """
        Args:
            num_samples: G, programs sampled per prompt (the GRPO group).
            temperature: sampling temperature; the policy's log-probs use the same one.
            top_p: nucleus sampling threshold (1.0 = off).
            max_new_tokens: longest answer; generation also stops at EOS.
        """
        if num_samples < 2:
            raise ValueError(f"num_samples must be >= 2 for group-normalised advantages, got {num_samples}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.num_samples = num_samples
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens

    def on_train_start(self, trainer, module) -> None:
        if trainer.world_size > 1:
            seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))
            torch.manual_seed(rank_seed(seed, trainer.global_rank))

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if module.temperature != self.temperature:
            raise ValueError(
                f"the sampler draws at temperature {self.temperature} but the module scores log-probs at "
                f"{module.temperature}: give ViRLModule(temperature=...) the sampler's (the CLI links them)"
            )
        started = time.perf_counter()
        completions = sample(
            module.model,
            module.processor,
            batch.inputs,
            num_samples=self.num_samples,
            max_new_tokens=self.max_new_tokens,
            do_sample=True,
            temperature=self.temperature,
            top_p=self.top_p,
        )
        module.rollout = Rollout(batch=batch, completions=completions, group_size=self.num_samples)
        module.rollout.seconds["sample"] = time.perf_counter() - started

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0) -> None:
        """Held-out prompts during fit: one greedy answer each (G = 1), as benchmarks decode."""
        completions = sample(
            module.model, module.processor, batch.inputs, num_samples=1, max_new_tokens=self.max_new_tokens, do_sample=False
        )
        module.rollout = Rollout(batch=batch, completions=completions, group_size=1)
