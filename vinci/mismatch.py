"""How far the sampler's log-probs are from the trainer's, per step, and the importance weights
that correct for it.

A rollout engine (vLLM, or `generate` itself under another dtype or kernel) samples from a
distribution a little different from the one the update scores. The update's old log-probs
(the policy before this step's optimizer step, computed by the trainer) and the sampler's own
log-probs of the same tokens measure that difference:

    rollout/logp_gap_mean, rollout/logp_gap_max   |old - sampler| over completion tokens
    rollout/is_weight_mean                        mean truncated weight min(exp(old - sampler), cap)
    rollout/is_clipped_frac                       share of tokens whose weight hit the cap

With the correction on, each token's loss term is multiplied by its weight (TRL's token-level
truncated importance sampling); with it off the loss is unchanged and the numbers only report.
"""

from __future__ import annotations

import torch

from vinci.grpo import importance_weights


class SamplerMismatch:
    def __init__(self, cap: float):
        self.cap = cap
        self.tokens = 0
        self.gap_sum = 0.0
        self.gap_max = 0.0
        self.weight_sum = 0.0
        self.clipped = 0

    def observe(self, old_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor, record: bool = True) -> torch.Tensor:
        """[n, L] weights for these rows; with `record`, their tokens count in the step's numbers
        (once per row: later PPO epochs reuse the same old log-probs)."""
        weights, clipped = importance_weights(old_logp.detach().float(), sampler_logp.float(), self.cap)  # [n, L]
        if record:
            valid = mask.bool()  # [n, L]
            gap = (old_logp.detach().float() - sampler_logp.float()).abs()[valid]  # [tokens]
            self.tokens += int(valid.sum())
            self.gap_sum += float(gap.sum())
            self.gap_max = max(self.gap_max, float(gap.max()) if gap.numel() else 0.0)
            self.weight_sum += float(weights[valid].sum())
            self.clipped += int(clipped[valid].sum())
        return weights

    def as_dict(self) -> dict[str, float]:
        n = max(1, self.tokens)
        return {
            "logp_gap_mean": self.gap_sum / n,
            "logp_gap_max": self.gap_max,
            "is_weight_mean": self.weight_sum / n,
            "is_clipped_frac": self.clipped / n,
        }
