"""The memory-lean log-probs equal the straightforward full-vocabulary computation (fp32, 1e-5)."""

import pytest
import torch
from PIL import Image

from vinci.backbone import Backbone, Lora, load_backbone
from vinci.data.collate import IGNORE, RLCollator, SFTCollator
from vinci.data.rows import Example
from vinci.generation import completion_mask
from vinci.grpo import policy_loss
from vinci.logprobs import answer_loss, chosen_logp, sequence_logp
from vinci.rollout import Rollout

ATOL = 1e-5


def _naive(hidden, weight, bias, ids, temperature):
    logits = (hidden @ weight.T + (0 if bias is None else bias)).float() / temperature  # [M, V]
    logp_all = torch.log_softmax(logits, dim=-1)  # [M, V]
    return logp_all.gather(-1, ids[:, None]).squeeze(-1), -(logp_all.exp() * logp_all).sum(-1)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_chosen_logp_values_entropy_and_gradients_match_the_full_softmax(chunk, temperature):
    torch.manual_seed(0)
    M, H, V = 50, 16, 301
    head = torch.nn.Linear(H, V, bias=True)  # a trainable head: its gradient must match too
    hidden = torch.randn(M, H, requires_grad=True)
    ids = torch.randint(0, V, (M,))
    upstream = torch.randn(M)  # an arbitrary loss weight per position

    logp, entropy = chosen_logp(hidden, head, ids, temperature, chunk=chunk, with_entropy=True)
    (logp * upstream).sum().backward()
    ours = hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone()

    hidden.grad, head.weight.grad, head.bias.grad = None, None, None
    ref_logp, ref_entropy = _naive(hidden, head.weight, head.bias, ids, temperature)
    (ref_logp * upstream).sum().backward()
    assert torch.allclose(logp, ref_logp, atol=ATOL)
    assert torch.allclose(entropy, ref_entropy, atol=ATOL)
    assert not entropy.requires_grad
    for got, want in zip(ours, (hidden.grad, head.weight.grad, head.bias.grad)):
        assert torch.allclose(got, want, atol=ATOL)


def test_banned_tokens_leave_the_softmax_as_generation_suppresses_them():
    """Sampling never draws a vision placeholder; the update's distribution leaves them out too,
    with the same values and gradients as a full softmax over logits with -inf there."""
    torch.manual_seed(1)
    M, H, V = 30, 8, 97
    head = torch.nn.Linear(H, V)
    hidden = torch.randn(M, H, requires_grad=True)
    banned = torch.tensor([3, 50, 96])
    ids = torch.randint(0, 3, (M,))  # never a banned id
    logp, entropy = chosen_logp(hidden, head, ids, 0.7, chunk=8, with_entropy=True, banned=banned)
    logp.sum().backward()
    ours = hidden.grad.clone()
    hidden.grad = None
    logits = (head(hidden) / 0.7).index_fill(-1, banned, float("-inf"))  # [M, V]
    full = torch.log_softmax(logits, dim=-1)
    ref = full.gather(-1, ids[:, None]).squeeze(-1)
    ref.sum().backward()
    torch.testing.assert_close(logp, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(hidden.grad, ours, atol=ATOL, rtol=0)
    probs = full.exp()
    ref_entropy = -(probs * full.nan_to_num(neginf=0.0)).sum(-1)
    assert torch.isfinite(entropy).all()
    torch.testing.assert_close(entropy, ref_entropy.detach(), atol=ATOL, rtol=0)
    unbanned, _ = chosen_logp(hidden, head, ids, 0.7, chunk=8)
    assert (logp > unbanned).all()  # the banned mass went to the rest


def test_chosen_logp_keeps_no_full_vocabulary_tensor_for_the_backward():
    """Tensors saved for the backward are only the chunk inputs, never a [*, V] tensor."""
    torch.manual_seed(0)
    M, H, V, chunk = 64, 8, 5000, 16
    head = torch.nn.Linear(H, V, bias=False)
    hidden = torch.randn(M, H, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logp, _ = chosen_logp(hidden, head, torch.randint(0, V, (M,)), chunk=chunk)
    assert saved and not any(V in shape for shape in saved), saved
    # whereas the straightforward way keeps [M, V] log-softmax outputs
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _naive(hidden, head.weight, None, torch.randint(0, V, (M,)), 1.0)
    assert any(shape == (M, V) for shape in saved)
    logp.sum().backward()
    assert hidden.grad is not None and torch.isfinite(hidden.grad).all()


def test_chosen_logp_rejects_bad_shapes():
    head = torch.nn.Linear(4, 10)
    with pytest.raises(ValueError, match="hidden"):
        chosen_logp(torch.zeros(2, 3, 4), head, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk"):
        chosen_logp(torch.zeros(2, 4), head, torch.zeros(2, dtype=torch.long), chunk=0)


def _examples(n=2):
    colours = [(30, 120, 200), (200, 60, 10), (10, 160, 40)]
    return [
        Example(Image.new("RGB", (64 + 16 * i, 64), colours[i % 3]), "<image>Write the svg code that draws this image.",
                "svg", "```svg\n<svg>" + "x" * (3 + 5 * i) + "</svg>\n```", f"t:{i}")
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def policy(tiny_model):
    torch.manual_seed(0)
    model, processor = load_backbone(Backbone(model=str(tiny_model), dtype="float32", lora=Lora(dropout=0.0)))
    with torch.no_grad():  # a fresh LoRA is the identity; move B off zero so LoRA gradients are nonzero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    model.train()
    return model, processor


def _rollout(processor, G=2, L=9):
    batch = RLCollator(processor)(_examples(2))
    torch.manual_seed(1)
    eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = torch.randint(10, 200, (2 * G, L))  # [N, L] text tokens
    ids[0, 4] = eos  # row 0 ends early: its later positions are padding
    mask = completion_mask(ids, {eos})
    ids = ids.masked_fill(mask == 0, processor.tokenizer.pad_token_id)
    return Rollout(batch=batch, group_size=G, completion_ids=ids, completion_mask=mask)


def test_sequence_logp_loss_and_gradients_match_the_full_model_forward(policy):
    model, processor = policy
    rollout = _rollout(processor)
    rows = list(range(4))
    inputs, ids, mask = rollout.inputs(rows, "cpu")
    advantages = torch.tensor([1.0, -0.5, 0.3, -0.8])
    trainable = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads(logp, entropy):
        loss, stats = policy_loss(logp, logp.detach() + 0.05, advantages, mask, entropy=entropy)
        grads = torch.autograd.grad(loss, trainable)
        return loss.detach(), grads

    logp, entropy = sequence_logp(model, inputs, ids, mask, temperature=0.7, chunk=5, with_entropy=True)
    loss, grads = loss_and_grads(logp, entropy)

    logits = model(**inputs, use_cache=False).logits[:, -ids.shape[1] - 1 : -1].float() / 0.7  # [n, L, V]
    logp_all = torch.log_softmax(logits, dim=-1)
    ref_logp = logp_all.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    ref_entropy = -(logp_all.exp() * logp_all).sum(-1)
    ref_loss, ref_grads = loss_and_grads(ref_logp, ref_entropy.detach())

    valid = mask.bool()
    assert not valid.all() and valid.any()
    assert torch.allclose(logp[valid], ref_logp[valid], atol=ATOL)
    assert torch.allclose(entropy[valid], ref_entropy[valid].detach(), atol=ATOL)
    assert (logp[~valid] == 0).all()
    assert torch.allclose(loss, ref_loss, atol=ATOL)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    for got, want in zip(grads, ref_grads):
        assert torch.allclose(got, want, atol=ATOL)


def test_answer_loss_matches_the_models_own_labels_loss(policy):
    model, processor = policy
    batch = SFTCollator(processor)(_examples(3))
    assert (batch.labels == IGNORE).any() and (batch.labels != IGNORE).any()
    trainable = [p for p in model.parameters() if p.requires_grad]
    loss, count = answer_loss(model, batch.inputs, batch.labels, chunk=4)
    grads = torch.autograd.grad(loss, trainable)
    reference = model(**batch.inputs, labels=batch.labels).loss
    ref_grads = torch.autograd.grad(reference, trainable)
    assert count == int((batch.labels[:, 1:] != IGNORE).sum())
    assert torch.allclose(loss, reference, atol=ATOL)
    for got, want in zip(grads, ref_grads):
        assert torch.allclose(got, want, atol=ATOL)


def test_the_entropy_is_computed_in_the_forward_only_not_again_in_the_checkpointed_backward(monkeypatch):
    from vinci import logprobs

    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50)
    hidden = torch.randn(10, 8, requires_grad=True)  # [M, H]
    ids = torch.randint(0, 50, (10,))  # [M]
    softmaxes = []
    softmax = torch.softmax
    monkeypatch.setattr(logprobs.torch, "softmax", lambda *a, **k: softmaxes.append(1) or softmax(*a, **k))
    logp, entropy = logprobs.chosen_logp(hidden, head, ids, chunk=4, with_entropy=True)  # 3 chunks
    assert len(softmaxes) == 3
    logp.sum().backward()  # recomputes each chunk's logits for the gradient, not its entropy
    assert len(softmaxes) == 3 and hidden.grad is not None and head.weight.grad is not None
    reference = torch.log_softmax(head(hidden.detach()), dim=-1)  # [M, V]
    torch.testing.assert_close(entropy, -(reference.exp() * reference).sum(-1), atol=1e-5, rtol=0)
