"""Log-probabilities of chosen tokens without full-vocabulary float tensors.

A VLM's output head maps hidden states [M, H] to logits [M, V]. With Qwen's V = 151,936, one
float32 `[2, 512, V]` tensor is 594 MiB, and the plain recipe (head over every position, then
`.float()`, `/ T`, `log_softmax`, `exp` for the entropy, all kept for the backward) holds
several of them. Here instead:

- the caller picks the positions that matter (those predicting a completion or answer token)
  and only those reach the head: `hidden_states` runs the model *without* its head;
- the head runs over `chunk` positions at a time, and each chunk is reduced at once to the
  chosen token's log-prob (and, when asked, the entropy): `[c, V] -> [c]`;
- under grad each chunk is checkpointed, so nothing of size V outlives its chunk: the
  backward recomputes that chunk's logits (one extra head matmul per chunk, no more; the
  entropy, a statistic, is computed in the forward only).

Peak full-vocabulary memory is therefore a few `[chunk, V]` float32 tensors (chunk 64 at
V = 151,936: 37 MiB each), whatever the batch or the sequence length. Values, entropies and
gradients equal the straightforward computation (tests/test_logprobs.py, 1e-5 in fp32).

The entropy is a statistic: it is returned detached and never differentiated.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

DEFAULT_CHUNK = 64  # positions per head call: [64, 151936] fp32 = 37 MiB; a CPU default
# On a GPU each head call reads the whole [V, H] head (622 MB for Qwen2.5-VL-3B in bf16) from
# memory: 64 positions per read is ~64 flop per byte, bandwidth-bound on any GPU; the recipes use
# 256, past a consumer card's ridge (~165 flop/byte on an RTX 4090), at 148 MiB per [256, V] tensor.


def inner_model(model):
    """The model without its output head: `(peft wrapper ->) ForConditionalGeneration -> .model`.

    Every image-text-to-text family transformers serves (Qwen2/2.5/3-VL, Idefics3, SmolVLM,
    Gemma 3) computes `lm_head(self.model(...)[0])`; LoRA layers sit inside `.model` in place,
    so calling it runs the adapted network.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, "model", None)
    if inner is None or base.get_output_embeddings() is None:
        raise TypeError(f"{type(base).__name__} has no `.model` + output head pair to score tokens with")
    return base, inner


def hidden_states(model, inputs: dict) -> Tensor:
    """Last hidden states [n, T, H] of the full sequence: vision tower and decoder, no head."""
    _, inner = inner_model(model)
    out = inner(**inputs, use_cache=False)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]  # [n, T, H]


def output_head(model) -> Callable[[Tensor], Tensor]:
    """The output head as the active adapter sees it (a trained, tied copy included)."""
    base, _ = inner_model(model)
    return base.get_output_embeddings()


class FirstCallOnly:
    """True the first time it is asked, False after: a checkpointed chunk runs twice (its forward,
    then the backward's recompute), and the entropy, a statistic with no gradient, is wanted once."""

    def __init__(self) -> None:
        self.asked = False

    def __bool__(self) -> bool:
        first, self.asked = not self.asked, True
        return first


def _chunk_logp(head, hidden: Tensor, ids: Tensor, temperature: float, with_entropy, banned: Optional[Tensor] = None):
    """One chunk: hidden [c, H], ids [c] -> (log p(id) [c], entropy [c] or an empty tensor).

    `with_entropy` is read once per call (a `FirstCallOnly` is true in the forward only).
    `banned` [k] token ids get probability 0, as sampling gives them (vision placeholders)."""
    logits = head(hidden).float()  # [c, V]
    if temperature != 1.0:  # in place: the head's backward needs its inputs, not this output
        logits = logits.div_(temperature)
    if banned is not None and banned.numel():
        logits = logits.index_fill_(-1, banned, float("-inf"))
    normaliser = torch.logsumexp(logits, dim=-1)  # [c]
    logp = logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - normaliser  # [c]
    if not with_entropy:
        return logp, logp.new_empty(0)
    with torch.no_grad():
        probs = torch.softmax(logits, dim=-1)  # [c, V]
        finite = logits.nan_to_num(neginf=0.0) if banned is not None and banned.numel() else logits  # 0 * -inf -> 0
        expected = torch.bmm(probs.unsqueeze(1), finite.unsqueeze(2)).view(-1)  # [c]: sum_v p_v * z_v, no [c, V] product
        entropy = normaliser - expected  # [c]
    return logp, entropy


def chosen_logp(
    hidden: Tensor,
    head: Callable[[Tensor], Tensor],
    ids: Tensor,
    temperature: float = 1.0,
    chunk: int = DEFAULT_CHUNK,
    with_entropy: bool = False,
    banned: Optional[Tensor] = None,
) -> tuple[Tensor, Optional[Tensor]]:
    """log softmax(head(hidden) / T)[ids] for hidden [M, H] and ids [M]: ([M] float32, entropy [M] | None).

    Gradients flow to `hidden` and to any trainable head weight; no `[M, V]` tensor is kept.
    `banned` [k]: token ids left out of the softmax (probability 0), as generation suppresses them.
    """
    if hidden.ndim != 2 or ids.shape != hidden.shape[:1]:
        raise ValueError(f"need hidden [M, H] and ids [M], got {tuple(hidden.shape)} and {tuple(ids.shape)}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    grad = torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in _parameters(head)))
    logps, entropies = [], []
    for start in range(0, hidden.shape[0], chunk):
        h, i = hidden[start : start + chunk], ids[start : start + chunk]  # [c, H], [c]
        if grad:  # keep only h; the backward recomputes this chunk's logits, not its entropy
            entropy_once = FirstCallOnly() if with_entropy else False
            logp, entropy = checkpoint(_chunk_logp, head, h, i, temperature, entropy_once, banned, use_reentrant=False)
        else:
            logp, entropy = _chunk_logp(head, h, i, temperature, with_entropy, banned)
        logps.append(logp)
        entropies.append(entropy)
    if not logps:  # no positions at all
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, (empty if with_entropy else None)
    return torch.cat(logps), (torch.cat(entropies).detach() if with_entropy else None)  # [M], [M] | None


def _parameters(head) -> list[Tensor]:
    return list(head.parameters()) if isinstance(head, torch.nn.Module) else []


def sequence_logp(
    model,
    inputs: dict,
    ids: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    chunk: int = DEFAULT_CHUNK,
    with_entropy: bool = False,
    banned: Optional[list[int]] = None,
) -> tuple[Tensor, Optional[Tensor]]:
    """Log-probs of the last L tokens of `inputs["input_ids"]` ([n, P + L]), which are `ids` [n, L].

    Only positions where `mask` [n, L] is set reach the head; others hold 0. `banned`: token ids
    the sampler never draws (vinci.inputs.multimodal_token_ids), left out of the softmax so these
    are the log-probs of the distribution sampled from. Returns (logp [n, L] float32, entropy [n, L] | None).
    """
    n, length = ids.shape
    hidden = hidden_states(model, inputs)  # [n, P + L, H]
    predicting = hidden[:, -length - 1 : -1]  # [n, L, H]: position t predicts completion token t
    valid = mask.bool()  # [n, L]
    banned_ids = torch.tensor(banned, device=hidden.device) if banned else None  # [k]
    logp_valid, entropy_valid = chosen_logp(
        predicting[valid], output_head(model), ids[valid], temperature, chunk, with_entropy, banned_ids
    )  # [M], [M] | None
    logp = torch.zeros(n, length, dtype=torch.float32, device=hidden.device).index_put((valid,), logp_valid)  # [n, L]
    entropy = None
    if with_entropy:
        entropy = torch.zeros_like(logp).index_put((valid,), entropy_valid)  # [n, L]
    return logp, entropy


def answer_loss(model, inputs: dict, labels: Tensor, ignore_index: int = -100, chunk: int = DEFAULT_CHUNK) -> tuple[Tensor, int]:
    """Mean next-token cross-entropy over answer tokens (labels != ignore_index), chunked.

    The same number as a causal LM's own `labels=` loss, without its [B, T, V] logits.
    Returns (loss [], answer token count).
    """
    hidden = hidden_states(model, inputs)  # [B, T, H]
    targets = labels[:, 1:]  # [B, T - 1]: position t predicts token t + 1
    keep = targets != ignore_index  # [B, T - 1]
    logp, _ = chosen_logp(hidden[:, :-1][keep], output_head(model), targets[keep], chunk=chunk)  # [M]
    count = int(keep.sum())
    if count == 0:
        return hidden.sum() * 0.0, 0  # no answer tokens: a zero loss still connected to the graph
    return -logp.mean(), count
