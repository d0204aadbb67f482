"""The vision tower once per prompt image per ViRL step (vinci.vision_reuse), on every family.

With the tower frozen, a step's image features are computed once and reused: the sampled tokens
and the update's log-probs must not change (token ids identical, log-probs to 1e-5 in fp32),
and a forward hook on the vision module must see each distinct prompt image once per step,
where the plain path encodes it again for each of its G rows in every scoring pass.
"""

from __future__ import annotations

import pytest
import torch

from callbacks.rollout import RolloutSampler
from tests.test_families import examples, noise, one_thread  # noqa: F401  (one_thread: a module-wide fixture)
from vinci.backbone import Backbone, Lora, load_backbone
from vinci.data.collate import RLCollator
from vinci.data.rows import Example
from vinci.generation import sample
from vinci.inputs import collate_rows, image_parts
from vinci.logprobs import inner_model, sequence_logp
from vinci.rollout import Rollout
from vinci.vision_reuse import reuse_image_features
from vinci.virl import ViRLModule

G = 3
ATOL = 1e-5


class VisionCount:
    """Images through the vision tower, seen by a forward hook on it: Qwen-VL's `visual` gets
    grid_thw [n, 3] (one row per image); Idefics3's `vision_model` gets its real tiles [n, 3, H, W]."""

    def __init__(self, model) -> None:
        self.tower = next(m for n, m in model.named_modules() if n.endswith((".visual", ".vision_model")))
        self.images = 0
        self.calls = 0
        self.handle = self.tower.register_forward_hook(self.count, with_kwargs=True)

    def count(self, module, args, kwargs, output) -> None:
        grid = kwargs.get("grid_thw")
        pixels = kwargs.get("pixel_values", args[0] if args else None)
        self.images += grid.shape[0] if grid is not None else pixels.shape[0]
        self.calls += 1

    def take(self) -> int:
        images, self.images = self.images, 0
        return images


def prompts() -> list[Example]:
    """Three prompts, the first and last on the same image: two distinct images."""
    rows = examples()
    return rows + [Example(noise(120, 90), "<image>Draw this in svg.", "svg", rows[0].answer, "t:2")]


@pytest.fixture(scope="module")
def policy(family_model):
    torch.manual_seed(0)
    model, processor = load_backbone(Backbone(model=str(family_model.path), dtype="float32", lora=Lora(dropout=0.0)))
    with torch.no_grad():  # a fresh LoRA is the identity; move B off zero so the policy is not the base
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)
    return model, processor, VisionCount(model)


IMAGE_KEYS = ("pixel_values", "image_grid_thw", "pixel_attention_mask")


def same(a: dict, b: dict) -> bool:
    return all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


def distinct_cost(model, processor, count: VisionCount, rows: list[Example] | None = None) -> int:
    """What the tower counts for the images of `rows` (default: the two distinct images of
    `prompts()`), encoded once each."""
    count.take()
    with torch.no_grad():
        batch = RLCollator(processor)(rows or prompts()[:2])
        model.get_image_features(**{k: v for k, v in batch.inputs.items() if k in IMAGE_KEYS})
    return count.take()


def draw(model, processor, batch, **settings):
    torch.manual_seed(5)
    return sample(model, processor, batch.inputs, max_new_tokens=6, **settings)


def test_image_parts_split_per_image_and_collate_joins_them(policy):
    _, processor, _ = policy
    inputs = RLCollator(processor)(prompts()).inputs
    images = {k: v for k, v in inputs.items() if k in IMAGE_KEYS}
    parts = image_parts(images)
    assert len(parts) == 3 and same(parts[0], parts[2]) and not same(parts[0], parts[1])
    joined = collate_rows(parts, 0)
    assert joined.keys() == images.keys()
    for key, value in images.items():  # Idefics3's tiles: padded to the most real tiles a row has
        assert torch.equal(joined[key], value[:, : joined[key].shape[1]] if value.dim() >= 4 else value), key


def test_samples_are_unchanged_and_a_warm_cache_skips_the_tower(policy):
    """(a) Greedy answers and seeded samples with the reuse on equal those without; a second
    sampling in the same step finds every image cached and runs no vision forward."""
    model, processor, count = policy
    batch = RLCollator(processor)(prompts())
    once = distinct_cost(model, processor, count)
    greedy = draw(model, processor, batch, num_samples=1, do_sample=False)
    sampled = draw(model, processor, batch, num_samples=G)
    count.take()
    with reuse_image_features(model) as cache:
        greedy_once = draw(model, processor, batch, num_samples=1, do_sample=False)
        assert count.take() == once, "the prompt that repeats an image did not run the tower again"
        sampled_once = draw(model, processor, batch, num_samples=G)
        assert count.take() == 0, "the second sampling found every image cached"
    assert torch.equal(greedy_once.sequences, greedy.sequences)
    assert torch.equal(sampled_once.sequences, sampled.sequences)
    assert cache.images_encoded == 2 and cache.images_reused == 1 + 3  # the repeated image, then all three
    assert not cache.entries, "the cache is emptied when the step ends"
    assert "get_image_features" not in inner_model(model)[1].__dict__, "the model's own method is back"


def test_each_distinct_prompt_image_runs_through_the_tower_once_per_step(policy):
    """(c) Sampling G answers, then scoring the rollout in micro-batches: once per distinct image
    with the reuse; the plain path encodes every row's image in every scoring pass."""
    model, processor, count = policy
    batch = RLCollator(processor)(prompts())
    once = distinct_cost(model, processor, count)
    every_prompt = distinct_cost(model, processor, count, prompts())  # the repeated image counted twice

    def step(reuse: bool) -> int:
        with reuse_image_features(model, enabled=reuse):
            done = draw(model, processor, batch, num_samples=G)
            rollout = Rollout(batch=batch, group_size=G, completion_ids=done.completion_ids, completion_mask=done.completion_mask)
            for rows in ([0, 1, 2, 3], [4, 5, 6, 7], [8]):  # 9 rows in micro-batches, as ViRLModule.update
                sequence_logp(model, *rollout.inputs(rows, "cpu"))
        return count.take()

    assert step(reuse=True) == once
    # the plain path: generate encodes each prompt's image once, each row encodes its prompt's again
    assert step(reuse=False) == every_prompt * (1 + G)


def test_log_probs_of_rollout_rows_are_unchanged(policy):
    """(b) sequence_logp over rollout rows, reusing sampling's features, equals the plain path."""
    model, processor, count = policy
    batch = RLCollator(processor)(prompts())
    done = draw(model, processor, batch, num_samples=G)
    rollout = Rollout(batch=batch, group_size=G, completion_ids=done.completion_ids, completion_mask=done.completion_mask)
    micro_batches = ([0, 1, 2, 3], [4, 5, 6, 7], [8])
    plain = [sequence_logp(model, *rollout.inputs(rows, "cpu"), temperature=0.7, with_entropy=True) for rows in micro_batches]
    with reuse_image_features(model):
        draw(model, processor, batch, num_samples=G)
        count.take()
        reused = [sequence_logp(model, *rollout.inputs(rows, "cpu"), temperature=0.7, with_entropy=True) for rows in micro_batches]
        assert count.take() == 0, "the update reused the features sampling computed"
    mask = rollout.completion_mask.bool()
    assert mask.sum() >= 9
    logp, entropy = (torch.cat([r[i] for r in reused]) for i in (0, 1))
    want_logp, want_entropy = (torch.cat([r[i] for r in plain]) for i in (0, 1))
    torch.testing.assert_close(logp[mask], want_logp[mask], atol=ATOL, rtol=0)
    torch.testing.assert_close(entropy[mask], want_entropy[mask], atol=ATOL, rtol=0)
    grads = torch.autograd.grad(logp[mask].sum(), [p for p in model.parameters() if p.requires_grad], allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads), "the reused features still let LoRA learn"


# ---- in the ViRL step -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def virl(family_models):
    """A ViRL module on Qwen3-VL (deepstack: the richest features to reuse), 2 samples per prompt."""
    from tests.test_virl_step import driven

    with driven(family_models("qwen3_vl"), RolloutSampler(num_samples=2, max_new_tokens=6), micro_batch_size=2, ppo_epochs=2) as module:
        yield module


def training_step(module, batch) -> dict:
    """`ViRLModule.training_step` without a trainer: no logging, one process, a plain optimizer."""
    optimizer = torch.optim.SGD(module.trainable_parameters(), lr=0.0)
    stubs = dict(log=lambda *a, **k: None, all_gather=lambda x: x, optimizers=lambda: optimizer,
                 lr_schedulers=lambda: None, manual_backward=lambda loss: loss.backward())
    module.__dict__.update(stubs)
    try:
        return module.training_step(batch, 0)
    finally:
        for name in stubs:
            del module.__dict__[name]


def test_a_virl_step_runs_the_tower_once_per_prompt_image(virl):
    """Sampling, then two PPO epochs over the rows: each distinct prompt image once with
    reuse_vision (the default), against once in sampling and once per row and epoch without."""
    assert virl.reuse_vision and virl.vision_once
    count = VisionCount(virl.model)
    try:
        batch = RLCollator(virl.processor)(prompts())
        once = distinct_cost(virl.model, virl.processor, count)
        every_prompt = distinct_cost(virl.model, virl.processor, count, prompts())
        training_step(virl, batch)
        assert count.take() == once
        assert "get_image_features" not in inner_model(virl.model)[1].__dict__
        virl.vision_once = False  # as reuse_vision: false
        training_step(virl, batch)
        assert count.take() == every_prompt * (1 + 2 * 2)  # sampling, then G = 2 rows per prompt x 2 epochs
    finally:
        virl.vision_once = True
        count.handle.remove()


def test_a_vision_tower_that_trains_is_refused_with_the_reason(tiny_model):
    model, _ = load_backbone(Backbone(model=str(tiny_model), lora=Lora(vision="lora")))
    with pytest.raises(ValueError, match="vision tower parameters train.*change with every update"):
        with reuse_image_features(model):
            pass
    with reuse_image_features(model, enabled=False) as cache:
        assert cache is None
    with pytest.warns(UserWarning, match="reuse_vision is on, but .* runs for every rollout row"):
        module = ViRLModule(Backbone(model=str(tiny_model), lora=Lora(vision="lora")))
        module.configure_model()
    assert not module.vision_once
