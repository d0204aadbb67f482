"""Sampling: completions stop at EOS and never contain image/video placeholder tokens."""

import torch
from PIL import Image

from vinci.generation import completion_mask, multimodal_token_ids, sample


def test_completion_mask_keeps_tokens_up_to_first_eos():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 1, 1, 1]])
    assert completion_mask(ids, {2}).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_sampled_completions_never_contain_image_placeholders(tiny_model):
    """A policy that prefers <|image_pad|> would make prompt + completion unreadable to the
    model (one image placeholder too many); generation must suppress it."""
    from vinci.data.collate import RLCollator
    from vinci.data.rows import Example
    from vinci.evaluate import load_for_eval

    net, processor = load_for_eval(str(tiny_model), None)
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
