"""Sampling ignores what a released model's generation_config.json sets, but for its special tokens.

Instruct releases ship decoding settings: Qwen2.5-VL-Instruct's sets (as we recall it; the file
was not at hand) do_sample true, repetition_penalty 1.05, temperature 0.1, top_p 0.001, top_k 1;
other releases add n-gram bans. Had any of them reached `sample`, ViRL rollouts would come from a
penalised distribution the update does not score, and greedy evaluation would not be greedy.
"""

import json
import shutil

import pytest
import torch
from PIL import Image

from vinci.backbone import Backbone, load_backbone
from vinci.data.collate import RLCollator
from vinci.data.rows import Example
from vinci.generation import sample
from vinci.inputs import multimodal_token_ids
from vinci.logprobs import sequence_logp
from vinci.rollout import sequence_inputs

RELEASED = dict(do_sample=True, repetition_penalty=1.05, temperature=0.1, top_p=0.001, top_k=1, no_repeat_ngram_size=2)


@pytest.fixture(scope="module")
def released_model(family_models, tmp_path_factory):
    """The tiny Qwen2.5-VL, with released-style decoding settings in its generation_config.json."""
    folder = tmp_path_factory.mktemp("released") / "qwen2_5_vl"
    shutil.copytree(family_models("qwen2_5_vl"), folder)
    path = folder / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **RELEASED}))
    model, processor = load_backbone(Backbone(model=str(folder), dtype="float32"), trainable=False)
    assert model.generation_config.repetition_penalty == 1.05  # loaded through the real path
    banned = multimodal_token_ids(model, processor.tokenizer)

    def never_vision_tokens(module, args, logits):  # [N, T, V]: as a trained policy, so that
        logits[..., banned] = -1e4  # suppressing them takes no mass from what the update scores
        return logits

    model.get_output_embeddings().register_forward_hook(never_vision_tokens)
    return model, processor


def prompts(processor, n=2):
    examples = [
        Example(Image.new("RGB", (64, 64), "red"), "<image>Write the svg code that draws this image.", "svg", None, "a"),
        Example(Image.new("RGB", (96, 64), "blue"), "<image>Write the html code of this web page. Keep it short.", "html", None, "b"),
    ]
    return RLCollator(processor)(examples[:n])


def argmax_decoding(model, inputs, steps: int, eos: int) -> list[int]:
    """Greedy decoding of one unpadded prompt, one full forward per token, no logits processors."""
    ids, types = inputs["input_ids"], inputs["mm_token_type_ids"]  # [1, P]
    image = dict(pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"])
    out = []
    with torch.no_grad():
        for _ in range(steps):
            step_types = torch.cat([types, types.new_zeros(1, ids.shape[1] - types.shape[1])], dim=1)
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=step_types,
                           use_cache=False, **image).logits  # [1, T, V]
            token = int(logits[0, -1].argmax())
            out.append(token)
            if token == eos:
                break
            ids = torch.cat([ids, ids.new_tensor([[token]])], dim=1)
    return out


def test_greedy_sampling_is_argmax_decoding(released_model):
    model, processor = released_model
    batch = prompts(processor, n=1)
    eos = model.generation_config.eos_token_id
    expected = argmax_decoding(model, batch.inputs, steps=12, eos=eos)
    assert len(expected) >= 4
    raw = model.generate(**batch.inputs, max_new_tokens=12, do_sample=False)  # the hazard is real
    assert raw[0, batch.inputs["input_ids"].shape[1] :].tolist() != expected

    done = sample(model, processor, batch.inputs, max_new_tokens=12, do_sample=False)
    assert done.completion_ids[0, : int(done.completion_mask[0].sum())].tolist() == expected


def record_scores(model, monkeypatch) -> list[torch.Tensor]:
    """Make `model.generate` also keep, per call, its processed scores [N, L, V]: what was sampled from."""
    scores = []
    generate = model.generate

    def recording_generate(**kwargs):
        out = generate(**kwargs, output_scores=True, return_dict_in_generate=True)
        scores.append(torch.stack(out.scores, dim=1))  # [N, L, V]
        return out.sequences

    monkeypatch.setattr(model, "generate", recording_generate)
    return scores


def test_update_log_probs_are_those_sampled_from(released_model, monkeypatch):
    """log_softmax of the scores generate drew each token from (after every logits processor)
    equals what the update computes for that token (vinci.logprobs, as ViRLModule.completion_logp)."""
    model, processor = released_model
    batch = prompts(processor)
    scores = record_scores(model, monkeypatch)
    temperature = 0.7
    torch.manual_seed(0)
    done = sample(model, processor, batch.inputs, num_samples=2, max_new_tokens=8, temperature=temperature)
    ids, mask = done.completion_ids, done.completion_mask.bool()  # [4, L]
    sampled = torch.log_softmax(scores[0].float(), dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)  # [4, L]

    inputs, _, _ = sequence_inputs(batch, 2, done.completion_ids, done.completion_mask, [0, 1, 2, 3], "cpu")
    with torch.no_grad():
        update, _ = sequence_logp(model, inputs, ids, done.completion_mask, temperature)  # [4, L]
    assert mask.sum() >= 8
    torch.testing.assert_close(update[mask], sampled[mask], atol=1e-4, rtol=0)
    # The sampler's own record (SampledLogp) is the same distribution, without an [N, L, V] tensor.
    torch.testing.assert_close(done.logp[mask], sampled[mask], atol=1e-6, rtol=0)
    assert (done.logp[~mask] == 0).all()


@pytest.mark.parametrize("top_p", [0.6, 1.0])
def test_sampler_log_probs_follow_top_p(released_model, monkeypatch, top_p):
    """With nucleus sampling the recorded log-probs are those of the truncated, renormalised
    distribution generate drew from, and every drawn token lies inside the nucleus."""
    model, processor = released_model
    batch = prompts(processor)
    scores = record_scores(model, monkeypatch)
    torch.manual_seed(1)
    done = sample(model, processor, batch.inputs, num_samples=3, max_new_tokens=8, temperature=1.3, top_p=top_p)
    mask = done.completion_mask.bool()
    sampled = torch.log_softmax(scores[0].float(), dim=-1).gather(-1, done.completion_ids.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(done.logp[mask], sampled[mask], atol=1e-6, rtol=0)
    assert torch.isfinite(done.logp[mask]).all()
    finite = torch.isfinite(scores[0]).sum(dim=-1)[mask]  # [tokens] candidates per step (vision tokens are always banned)
    assert bool((finite < finite.max()).any()) == (top_p < 1.0)  # top-p cut the tail somewhere


def test_min_new_tokens_holds_off_eos(released_model):
    model, processor = released_model
    eos = model.generation_config.eos_token_id
    handle = model.get_output_embeddings().register_forward_hook(lambda m, a, logits: logits.index_fill_(-1, torch.tensor([eos]), 1e4))
    try:
        batch = prompts(processor)
        early = sample(model, processor, batch.inputs, num_samples=2, max_new_tokens=6)
        assert (early.completion_mask.sum(dim=1) == 1).all()  # EOS straight away
        full = sample(model, processor, batch.inputs, num_samples=2, max_new_tokens=6, min_new_tokens=6)
    finally:
        handle.remove()
    assert full.completion_ids.shape[1] == 6 and full.completion_mask.all()
    assert not (full.completion_ids == eos).any()
