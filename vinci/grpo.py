"""Pure GRPO maths: group-normalised advantages, the clipped policy loss, KL estimators.

The method (GRPO as VinciCoder's ViRL stage runs it, on EasyR1/verl conventions):

- **Advantages.** Each prompt gets G sampled programs with one scalar reward each. The
  advantage of a sample is its reward normalised inside its own group:
  ``(r - mean) / (std + eps)`` with the *unbiased* std, as EasyR1's ``grpo`` estimator does.
  It is one number per sequence, broadcast over that sequence's tokens. No value model, no
  GAE, no discounting.
- **Policy loss.** verl's sign convention (a loss to minimise). Per valid token, with
  ``ratio = exp(clamp(logp - old_logp, -20, 20))``:

  - ``pg1 = -A * ratio`` and ``pg2 = -A * clamp(ratio, 1 - clip_low, 1 + clip_high)``;
  - the pessimistic PPO term is ``max(pg1, pg2)``. DAPO's *clip-higher* is simply
    ``clip_high > clip_low``;
  - *dual-clip* (Ye et al. 2020, as in verl): for ``A < 0`` the loss is capped at
    ``-A * clip_dual``, i.e. ``min(max(pg1, pg2), -A * clip_dual)``. This stops one token
    whose probability rose a lot under a negative advantage from dominating the update.

- **Aggregation.** ``"token-mean"`` (DAPO, VinciCoder's default) averages over every valid
  token in the batch, so long answers weigh more. ``"seq-mean-token-mean"`` (original GRPO)
  averages inside each sequence first, then over sequences that have a valid token.
- **KL to a reference policy.** ``kl_penalty`` gives per-token estimators: ``k1`` (plain
  log-ratio), ``k2`` (half squared log-ratio) and ``low_var_kl`` (Schulman's k3, with the
  inner log-ratio clamped to +-20 and the result clamped to [-10, 10], as verl does). The
  caller adds ``beta * aggregate(kl, mask, agg)`` to the loss; it is off in VinciCoder's run.

What it simplifies: no entropy bonus (entropy is only reported), no per-token advantages, no
loss scaling by a fixed generation length (Dr. GRPO's "seq-mean-token-sum-norm"), no
clip-cov/KL-cov variants. A mask is read as valid (nonzero) / padding (zero); fractional
weights are not supported. Padding positions never reach the result, even when they hold
``inf`` or ``NaN`` (``torch.where``, not multiplication). Stats are detached 0-dim tensors,
so reading them costs no device sync until the caller logs them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

AGGREGATIONS = ("token-mean", "seq-mean-token-mean")
KL_KINDS = ("k1", "k2", "low_var_kl", "k3")
LOG_RATIO_CLAMP = 20.0  # exp(20) ~ 4.9e8: finite in float16/bfloat16/float32
LOW_VAR_KL_CLAMP = 10.0  # verl's bound on the k3 estimate


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over positions where ``mask`` is nonzero; 0 (not NaN) where none is.

    ``x`` and ``mask`` have the same shape. ``dim=None`` reduces everything to a 0-dim
    tensor; an int reduces that dimension only.
    """
    if x.shape != mask.shape:
        raise ValueError(f"masked_mean: x {tuple(x.shape)} and mask {tuple(mask.shape)} differ")
    valid = mask.bool()  # same shape as x
    total = torch.where(valid, x, torch.zeros_like(x)).sum(dim=dim)  # [] or x.shape minus dim
    count = valid.sum(dim=dim).to(total.dtype)  # same shape as total
    return total / count.clamp_min(1.0)  # same shape as total


def aggregate(values: Tensor, mask: Tensor, agg: str = "token-mean", denominator: float | Tensor | None = None) -> Tensor:
    """Reduce per-token ``values[N, T]`` to a scalar with one of ``AGGREGATIONS``.

    ``denominator=None`` averages over these N rows. A micro-batch of a larger batch passes the
    batch's own count (``batch_denominator``) instead, so that summing the micro-batches' losses
    gives the batch's mean exactly, whatever the micro-batch size.
    """
    if agg == "token-mean":
        if denominator is None:
            return masked_mean(values, mask)  # []
        return torch.where(mask.bool(), values, torch.zeros_like(values)).sum() / denominator  # []
    if agg == "seq-mean-token-mean":
        per_seq = masked_mean(values, mask, dim=-1)  # [N]
        has_tokens = mask.bool().any(dim=-1)  # [N]
        if denominator is None:
            return masked_mean(per_seq, has_tokens)  # []
        return torch.where(has_tokens, per_seq, torch.zeros_like(per_seq)).sum() / denominator  # []
    raise ValueError(f"unknown agg {agg!r}; expected one of {AGGREGATIONS}")


def batch_denominator(mask: Tensor, agg: str = "token-mean") -> float:
    """What ``aggregate`` divides by over a whole batch ``mask[N, T]``: its tokens (token-mean)
    or its sequences that have tokens (seq-mean-token-mean); at least 1."""
    if agg not in AGGREGATIONS:
        raise ValueError(f"unknown agg {agg!r}; expected one of {AGGREGATIONS}")
    valid = mask.bool()
    count = valid.sum() if agg == "token-mean" else valid.any(dim=-1).sum()
    return max(1.0, float(count))


def group_advantages(rewards: Tensor, eps: float = 1e-6, scale_by_std: bool = True) -> Tensor:
    """Group-normalised advantages: ``(r - mean) / (std + eps)`` per row, unbiased std.

    ``rewards`` is ``[B, G]``: B prompts, G samples each. A group whose rewards all match
    gets advantage 0 (it teaches nothing). With ``G == 1`` the unbiased std is undefined;
    the advantage is then 0 for every sample rather than NaN. ``scale_by_std=False`` gives
    Dr. GRPO's ``r - mean``: a group's pull then grows with its reward spread, instead of a
    group whose samples differ by 0.01 pulling as hard as one where half fail to render.
    """
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be [B, G], got shape {tuple(rewards.shape)}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    rewards = rewards.float() if not rewards.is_floating_point() else rewards  # [B, G]
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or inf; map failed samples to a finite reward first")
    if rewards.shape[1] == 1:
        return torch.zeros_like(rewards)  # [B, 1]
    mean = rewards.mean(dim=-1, keepdim=True)  # [B, 1]
    std = rewards.std(dim=-1, keepdim=True, correction=1)  # [B, 1]
    centred = rewards - mean  # [B, G]
    if not scale_by_std:
        return torch.where(std > 0, centred, torch.zeros_like(centred))  # [B, G]
    # An all-equal group has centred == 0 exactly; with eps == 0 that would be 0/0, so guard it.
    return torch.where(std > 0, centred / (std + eps), torch.zeros_like(centred))  # [B, G]


def zero_std_groups(rewards: Tensor, atol: float = 1e-8) -> Tensor:
    """Bool ``[B]``: True for groups whose G rewards all match (within ``atol``)."""
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be [B, G], got shape {tuple(rewards.shape)}")
    spread = rewards.max(dim=-1).values - rewards.min(dim=-1).values  # [B]
    return spread.abs() <= atol  # [B]


def frac_zero_std(rewards: Tensor, atol: float = 1e-8) -> float:
    """Share of groups in ``rewards[B, G]`` whose rewards all match (trl's frac_reward_zero_std)."""
    if rewards.numel() == 0:
        raise ValueError("frac_zero_std needs at least one group")
    return zero_std_groups(rewards, atol).float().mean().item()


@dataclass(frozen=True)
class PolicyStats:
    """Detached 0-dim tensors describing one ``policy_loss`` call (token-mean over valid tokens).

    Each clip fraction counts tokens whose gradient that clip zeroed: ``clip_frac_high`` is
    A > 0 and ratio > 1 + clip_high; ``clip_frac_low`` is A < 0 and ratio < 1 - clip_low;
    ``dual_clip_frac`` is A < 0 and ratio > clip_dual.
    """

    clip_frac_high: Tensor
    clip_frac_low: Tensor
    dual_clip_frac: Tensor
    approx_kl: Tensor
    """k3 estimate of KL(old || new): mean of ratio - 1 - log(ratio), tokens sampled from old."""
    ratio_mean: Tensor
    entropy: Tensor | None = None
    """Mean per-token entropy of the new policy, when the caller passed it."""

    def as_dict(self, prefix: str = "") -> dict[str, Tensor]:
        """``{prefix + name: value}`` for every stat that is set (ready for ``log_dict``)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[prefix + f.name] = value
        return out


def _check_policy_inputs(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, entropy: Tensor | None
) -> None:
    if logp.ndim != 2:
        raise ValueError(f"logp must be [N, T], got shape {tuple(logp.shape)}")
    for name, t in (("old_logp", old_logp), ("mask", mask), ("entropy", entropy)):
        if t is not None and t.shape != logp.shape:
            raise ValueError(f"{name} {tuple(t.shape)} must match logp {tuple(logp.shape)}")
    if advantages.shape != logp.shape[:1]:
        raise ValueError(
            f"advantages must be [N] = [{logp.shape[0]}] (one per sequence), "
            f"got {tuple(advantages.shape)}"
        )


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.3,
    clip_dual: float | None = 3.0,
    agg: str = "token-mean",
    entropy: Tensor | None = None,
    denominator: float | Tensor | None = None,
    weights: Tensor | None = None,
) -> tuple[Tensor, PolicyStats]:
    """Clipped-ratio GRPO loss with clip-higher and dual-clip; see the module docstring.

    ``logp``, ``old_logp``, ``mask`` (and ``entropy``, if given) are ``[N, T]`` per-token
    values for N sampled sequences; ``advantages`` is ``[N]``. Gradients flow only through
    ``logp``: ``old_logp``, ``advantages`` and ``entropy`` are detached. ``clip_dual=None``
    turns dual-clip off. ``denominator``: the whole batch's count when these N rows are one
    micro-batch of it (see ``aggregate``). ``weights`` ``[N, T]`` (detached) scale each token's
    term: the sampler-mismatch importance weights (``importance_weights``); None = 1 everywhere.
    Returns ``(loss, stats)`` with ``loss`` a 0-dim tensor.
    """
    if agg not in AGGREGATIONS:
        raise ValueError(f"unknown agg {agg!r}; expected one of {AGGREGATIONS}")
    if weights is not None and weights.shape != logp.shape:
        raise ValueError(f"weights {tuple(weights.shape)} must match logp {tuple(logp.shape)}")
    if not (0.0 <= clip_low < 1.0) or clip_high < 0.0:
        raise ValueError(f"need 0 <= clip_low < 1 and clip_high >= 0, got {clip_low}, {clip_high}")
    if clip_dual is not None and clip_dual <= 1.0:
        raise ValueError(f"clip_dual must be > 1 (or None to disable), got {clip_dual}")
    _check_policy_inputs(logp, old_logp, advantages, mask, entropy)

    valid = mask.bool()  # [N, T]
    adv = advantages.detach().to(logp.dtype).unsqueeze(-1)  # [N, 1]
    log_ratio = (logp - old_logp.detach()).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # [N, T]
    ratio = torch.exp(log_ratio)  # [N, T]

    pg_unclipped = -adv * ratio  # [N, T]
    pg_clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # [N, T]
    per_token = torch.maximum(pg_unclipped, pg_clipped)  # [N, T]
    if clip_dual is not None:
        capped = torch.minimum(per_token, -adv * clip_dual)  # [N, T]
        per_token = torch.where(adv < 0, capped, per_token)  # [N, T]
    if weights is not None:
        per_token = per_token * weights.detach().to(per_token.dtype)  # [N, T]
    loss = aggregate(per_token, valid, agg, denominator)  # []

    with torch.no_grad():
        positive, negative = adv > 0, adv < 0  # [N, 1] each
        high = positive & (ratio > 1.0 + clip_high)  # [N, T]
        low = negative & (ratio < 1.0 - clip_low)  # [N, T]
        if clip_dual is not None:
            dual = negative & (ratio > clip_dual)  # [N, T]
        else:
            dual = torch.zeros_like(valid)  # [N, T]
        k3 = ratio - 1.0 - log_ratio  # [N, T]
        stats = PolicyStats(
            clip_frac_high=masked_mean(high.float(), valid),  # []
            clip_frac_low=masked_mean(low.float(), valid),  # []
            dual_clip_frac=masked_mean(dual.float(), valid),  # []
            approx_kl=masked_mean(k3.float(), valid),  # []
            ratio_mean=masked_mean(ratio.float(), valid),  # []
            entropy=None if entropy is None else masked_mean(entropy.detach().float(), valid),  # []
        )
    return loss, stats


def importance_weights(old_logp: Tensor, sampler_logp: Tensor, cap: float) -> tuple[Tensor, Tensor]:
    """Truncated per-token importance weights for a sampler that is not exactly the trainer
    (another engine, kernel or dtype): ``min(exp(old - sampler), cap)``, TRL's token-level
    ``vllm_importance_sampling_correction``. Returns ``(weights [N, T], clipped [N, T] bool)``."""
    if old_logp.shape != sampler_logp.shape:
        raise ValueError(f"old_logp {tuple(old_logp.shape)} and sampler_logp {tuple(sampler_logp.shape)} differ")
    if cap < 1.0:
        raise ValueError(f"the importance-weight cap must be >= 1, got {cap}")
    ratio = torch.exp((old_logp - sampler_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))  # [N, T]
    return ratio.clamp(max=cap), ratio > cap


def kl_penalty(logp: Tensor, ref_logp: Tensor, kind: str = "low_var_kl") -> Tensor:
    """Per-token estimate ``[N, T]`` of KL(policy || reference) on tokens sampled from the policy.

    - ``k1``: ``logp - ref_logp`` (unbiased, high variance, can be negative);
    - ``k2``: ``0.5 * (logp - ref_logp) ** 2``;
    - ``low_var_kl`` (alias ``k3``): ``r - 1 - log r`` with ``r = exp(ref_logp - logp)``, the
      log-ratio clamped to +-20 and the result to [-10, 10] (verl's bounds). Always >= 0.

    Gradients flow through both inputs; detach ``ref_logp`` when the reference is frozen.
    """
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp {tuple(logp.shape)} and ref_logp {tuple(ref_logp.shape)} differ")
    diff = logp - ref_logp  # [N, T]
    if kind == "k1":
        return diff  # [N, T]
    if kind == "k2":
        return 0.5 * diff.square()  # [N, T]
    if kind in ("low_var_kl", "k3"):
        log_r = (-diff).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # [N, T]
        k3 = torch.exp(log_r) - 1.0 - log_r  # [N, T]
        return k3.clamp(-LOW_VAR_KL_CLAMP, LOW_VAR_KL_CLAMP)  # [N, T]
    raise ValueError(f"unknown KL kind {kind!r}; expected one of {KL_KINDS}")
