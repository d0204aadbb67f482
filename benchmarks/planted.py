"""Planted answers: a random-weight policy's groups with one rendered program each.

A random policy writes no fenced block, so no program reaches the renderer and every reward is
0. For memory and time checks that need the render pool and the reward to do their real work,
the first sample of each prompt's group gets the prompt's reference program as its text (the
sampled tokens stay, so the update's tensors are the sampled ones). Each step then renders B
programs, one per group, and each group's rewards differ, so the update has a gradient.
"""

from __future__ import annotations

from typing import Optional, Sequence

from callbacks.rollout import RolloutSampler


def plant(texts: list[str], answers: Sequence[Optional[str]], group_size: int) -> list[str]:
    """`texts` [B*G] prompt-major, with row b*G replaced by answers[b] where it has one."""
    planted = list(texts)
    for prompt, answer in enumerate(answers):
        if answer:
            planted[prompt * group_size] = answer
    return planted


class PlantAnswers(RolloutSampler):
    """vinci's sampler with `plant` applied to each chunk (RL rows of the synthetic corpus carry
    their reference program as the answer)."""

    def sample_chunk(self, module, chunk):
        done = super().sample_chunk(module, chunk)
        done.texts[:] = plant(done.texts, chunk.answers, self.num_samples)
        return done
