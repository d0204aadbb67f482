"""Sampling: completions stop at EOS and never contain image/video placeholder tokens."""

import pytest
import torch
from PIL import Image

from vinci.generation import completion_mask, sample
from vinci.inputs import multimodal_token_ids
from vinci.logprobs import DEFAULT_CHUNK


def test_completion_mask_keeps_tokens_up_to_first_eos():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 1, 1, 1]])
    assert completion_mask(ids, {2}).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_sampled_completions_never_contain_image_placeholders(tiny_model):
    """A policy that prefers <|image_pad|> would make prompt + completion unreadable to the
    model (one image placeholder too many); generation must suppress it."""
    from vinci.data.collate import RLCollator
    from vinci.data.rows import Example
    from vinci.backbone import Backbone, load_backbone

    net, processor = load_backbone(Backbone(model=str(tiny_model)), trainable=False)
    image_id = net.config.image_token_id
    assert image_id in multimodal_token_ids(net)

    def prefer_image_pad(module, args, logits):  # [N, T, V]: make the placeholder the top token
        logits[..., image_id] += 1e4
        return logits

    net.lm_head.register_forward_hook(prefer_image_pad)
    example = Example(Image.new("RGB", (64, 64), "white"), "<image>Write the svg code that draws this image.", "svg", None, "t")
    batch = RLCollator(processor)([example])

    raw = net.generate(**batch.inputs, max_new_tokens=4, do_sample=False)  # the hazard is real
    assert (raw[:, batch.inputs["input_ids"].shape[1] :] == image_id).all()

    done = sample(net, processor, batch.inputs, num_samples=3, max_new_tokens=8, do_sample=True)
    banned = torch.tensor(multimodal_token_ids(net))
    assert not torch.isin(done.completion_ids, banned).any()


def test_update_log_probs_equal_the_samplers_with_left_padding(tiny_model):
    """ViRL's update takes its first-epoch log-probs as the old (sampling) log-probs. That holds
    only if one forward over left-padded prompt + completion gives the same log-probs as the
    token-by-token decoding that sampled them."""
    from types import SimpleNamespace

    from vinci.data.collate import RLCollator
    from vinci.data.rows import Example
    from vinci.backbone import Backbone, load_backbone
    from vinci.rollout import Rollout
    from vinci.virl import ViRLModule

    net, processor = load_backbone(Backbone(model=str(tiny_model)), trainable=False)
    examples = [  # prompts of different lengths, so the shorter one is left-padded
        Example(Image.new("RGB", (64, 64), "red"), "<image>Write the svg code that draws this image.", "svg", None, "a"),
        Example(Image.new("RGB", (96, 64), "blue"), "<image>Write the html code of this web page. Keep it short and plain.", "html", None, "b"),
    ]
    batch = RLCollator(processor)(examples)
    assert (batch.inputs["attention_mask"][:, 0] == 0).any(), "expected a left-padded row"
    torch.manual_seed(0)
    done = sample(net, processor, batch.inputs, num_samples=2, max_new_tokens=6, temperature=1.0)
    rollout = Rollout(batch=batch, group_size=2, completion_ids=done.completion_ids, completion_mask=done.completion_mask)
    rows = list(range(4))
    with torch.no_grad():
        logp, _ = ViRLModule.completion_logp(SimpleNamespace(model=net, temperature=1.0, head_chunk=DEFAULT_CHUNK, device=torch.device("cpu"), banned_tokens=[]), rollout, rows)  # [4, L]

        sizes = batch.inputs["image_grid_thw"].prod(dim=1).tolist()  # patches per image
        for n in rows:  # decode row n again token by token, from its unpadded prompt
            b = n // 2
            keep = batch.inputs["attention_mask"][b].bool()  # [P]
            ids = batch.inputs["input_ids"][b : b + 1, keep]  # [1, p]
            types = batch.inputs["mm_token_type_ids"][b : b + 1, keep]  # [1, p]
            image = dict(
                pixel_values=batch.inputs["pixel_values"][sum(sizes[:b]) : sum(sizes[: b + 1])],
                image_grid_thw=batch.inputs["image_grid_thw"][b : b + 1],
            )
            for t in range(int(done.completion_mask[n].sum())):
                step_types = torch.cat([types, types.new_zeros(1, ids.shape[1] - types.shape[1])], dim=1)
                logits = net(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=step_types,
                             use_cache=False, **image).logits  # [1, p + t, V]
                last = torch.log_softmax(logits[0, -1].float(), dim=-1)  # [V]
                token = done.completion_ids[n, t]
                assert logp[n, t].item() == pytest.approx(last[token].item(), abs=1e-4), (n, t)
                ids = torch.cat([ids, token.view(1, 1)], dim=1)
