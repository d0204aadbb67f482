"""The phases of one ViRL step on the tiny model, driven directly: chunked sampling, renders that
start per chunk, host-memory rollouts, the rollout-batch token mean, clipping after unscaling."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from callbacks.pipeline import Pipeline
from callbacks.render import RenderRollouts
from callbacks.reward_logger import RewardLogger
from callbacks.rollout import RolloutSampler
from vinci.backbone import Backbone, Lora
from vinci.data.collate import RLCollator
from vinci.data.rows import Example
from vinci.generation import sample
from vinci.reward import programs
from vinci.reward.metric import PatchSimilarity
from vinci.virl import ViRLModule

SVG = "<image>Write the svg code that draws this image."
PROMPTS = [  # different lengths, so shorter prompts are left-padded in the batch
    SVG,
    "<image>Write the svg code that draws this image. Keep it short.",
    "<image>Write the svg code that draws this image. Keep it short and plain, with one shape.",
    SVG,
]


def examples(n: int = 4) -> list[Example]:
    colours = [(30, 120, 200), (200, 60, 10), (10, 160, 40), (90, 90, 90)]
    return [Example(Image.new("RGB", (64 + 16 * i, 64), colours[i % 4]), PROMPTS[i % 4], "svg", None, f"t:{i}")
            for i in range(n)]


@contextmanager
def driven(model_path, sampler: RolloutSampler, lora: Lora | None = None, **settings):
    """A ViRLModule whose phases a test calls directly: model loaded, render pool started."""
    module = ViRLModule(Backbone(model=str(model_path), dtype="float32", lora=lora or Lora(dropout=0.0)), **settings)
    module.configure_model()
    render = RenderRollouts(workers=1, timeout=10.0)
    render.setup(None, module, "fit")
    module.pipeline = Pipeline(sampler, render, RewardLogger())
    try:
        yield module
    finally:
        render.teardown(None, module, "fit")


@pytest.fixture(scope="module")
def module(tiny_model):
    torch.manual_seed(0)
    with driven(tiny_model, RolloutSampler(num_samples=2, max_new_tokens=12), micro_batch_size=3) as module:
        yield module


def with_sampler(module, **settings) -> None:
    module.pipeline = module.pipeline._replace(sampler=RolloutSampler(**{"num_samples": 2, "max_new_tokens": 12, **settings}))


def test_one_chunk_draws_exactly_what_one_generate_call_over_the_batch_draws(module):
    """Today's step sampled the whole batch in one generate call; with one chunk, so does this."""
    batch = RLCollator(module.processor)(examples())
    with_sampler(module, prompts_per_generation=None)
    torch.manual_seed(7)
    rollout = module.sample(batch)
    torch.manual_seed(7)
    direct = sample(module.model, module.processor, batch.inputs, num_samples=2, max_new_tokens=12, temperature=1.0)
    length = direct.completion_ids.shape[1]
    assert torch.equal(rollout.completion_ids[:, :length], direct.completion_ids)
    assert rollout.texts == direct.texts and len(rollout.texts) == 8


def test_greedy_answers_do_not_depend_on_the_chunk_size(module):
    batch = RLCollator(module.processor)(examples())
    answers = {}
    for size in (None, 1, 3):
        with_sampler(module, prompts_per_generation=size)
        rollout = module.sample(batch, greedy=True)
        module.score(rollout)
        answers[size] = (rollout.texts, rollout.completion_mask.sum(dim=1).tolist())
    assert answers[1] == answers[None] == answers[3]


def test_each_chunk_goes_to_the_renderers_before_the_next_is_sampled(module):
    batch = RLCollator(module.processor)(examples())
    with_sampler(module, prompts_per_generation=1)
    calls = []
    sampler, render = module.pipeline.sampler, module.pipeline.render
    sample_chunk, submit = sampler.sample_chunk, render.submit
    sampler.sample_chunk = lambda m, chunk: calls.append(("sample", len(chunk.images))) or sample_chunk(m, chunk)
    render.submit = lambda texts, languages: calls.append(("render", len(texts))) or submit(texts, languages)
    try:
        rollout = module.sample(batch)
    finally:
        del sampler.sample_chunk, render.submit
    assert calls == [("sample", 1), ("render", 2)] * 4
    parts = module.score(rollout)
    assert parts.overall.shape == (8,) and len(rollout.renders) == len(rollout.codes) == 8
    assert not rollout.pending and rollout.seconds["render_exposed"] >= 0.0
    assert rollout.seconds["render"] >= rollout.seconds["render_exposed"]


def svg_answer(width: int) -> str:
    return (f"```svg\n<svg xmlns='http://www.w3.org/2000/svg' width='64' height='64'>"
            f"<rect width='{width}' height='64' fill='#1e78c8'/></svg>\n```")


def test_chunks_are_scored_on_their_own_thread_while_later_chunks_sample(module, monkeypatch):
    """The reward encoder does not wait for the last chunk, nor does sampling wait for it: the
    last chunk samples only once an earlier one has been scored, which can only happen on
    another thread; the rewards are those of scoring every row at the end."""
    batch = RLCollator(module.processor)(examples())
    with_sampler(module, prompts_per_generation=1)
    sampler = module.pipeline.sampler
    threads, sampled = [], []
    scored_one = threading.Event()
    real_sample, real_score = sampler.sample_chunk, module.visual.score

    def sample_after_a_score(m, chunk):
        if len(sampled) == 3:  # the last chunk: sampled while an earlier chunk is scored
            assert scored_one.wait(60), "no chunk was scored while later chunks sampled"
        done = real_sample(m, chunk)
        done.texts = [svg_answer(12 * (len(sampled) + i + 1)) for i in range(len(done.texts))]  # renders that differ
        sampled.append(chunk)
        return done

    def score(*args, **kwargs):
        threads.append(threading.current_thread().name)
        try:
            return real_score(*args, **kwargs)
        finally:
            scored_one.set()

    monkeypatch.setattr(sampler, "sample_chunk", sample_after_a_score)
    monkeypatch.setattr(module.visual, "score", score)
    rollout = module.sample(batch)
    parts = module.score(rollout)
    assert len(threads) == 4 and all(name.startswith("vinci-score") for name in threads)
    assert all(r.ok for r in rollout.renders) and parts.visual.min() > 0
    direct = programs.reward(rollout.texts, rollout.languages, rollout.references, rollout.renders, PatchSimilarity(),
                             module.format_weight)
    torch.testing.assert_close(parts.overall, direct.overall)
    seconds = rollout.seconds
    assert seconds["score"] > 0 and seconds["render_exposed"] >= 0 and seconds["score_exposed"] >= 0


def test_a_broken_render_pool_stops_the_step_when_it_scores(module, monkeypatch):
    """A pool that breaks is never a bad answer with reward 0: its error reaches the step."""
    batch = RLCollator(module.processor)(examples(2))
    with_sampler(module, prompts_per_generation=1)
    render = module.pipeline.render
    real_submit = render.submit

    def broken(texts, languages):
        renders = real_submit(texts, languages)
        renders.future = Future()
        renders.future.set_exception(RuntimeError("the render pool broke"))
        return renders

    monkeypatch.setattr(render, "submit", broken)
    rollout = module.sample(batch)
    with pytest.raises(RuntimeError, match="the render pool broke"):
        module.score(rollout)


def test_the_rollout_batch_stays_in_host_memory(module):
    """Lightning would move the whole batch to the device; a rollout batch reaches it one chunk
    or one micro-batch at a time instead."""
    batch = RLCollator(module.processor)(examples(2))
    kept = module.transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert kept is batch and all(t.device.type == "cpu" for t in batch.inputs.values() if torch.is_tensor(t))
    assert module.transfer_batch_to_device(torch.zeros(2), torch.device("meta"), 0).device.type == "meta"  # anything else moves


def update_gradients(module, rollout, micro_batch_size: int, agg: str, stats: dict | None = None) -> list[torch.Tensor]:
    """The gradient the update's first optimizer step sees, with the optimizer stubbed out
    (the update's returned statistics go into `stats`)."""
    grads = []

    class Optimizer:
        def zero_grad(self):
            module.model.zero_grad(set_to_none=True)

        def step(self):
            grads.append([p.grad.detach().clone() for p in module.trainable_parameters()])

    module.micro_batch_size = micro_batch_size
    module.clip = dict(module.clip, agg=agg)
    module.optimizers = lambda: Optimizer()
    module.lr_schedulers = lambda: None
    module.manual_backward = lambda loss: loss.backward()
    rows = list(range(rollout.num_rows))
    advantages = torch.linspace(-1.0, 1.0, len(rows))  # [N], distinct per row
    try:
        (stats if stats is not None else {}).update(module.update(rollout, rows, advantages, None))
    finally:
        for name in ("optimizers", "lr_schedulers", "manual_backward"):
            del module.__dict__[name]
    return grads[0]


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_the_gradient_does_not_depend_on_the_micro_batch_size(module, agg):
    batch = RLCollator(module.processor)(examples(3))
    with_sampler(module, prompts_per_generation=None)
    torch.manual_seed(3)
    rollout = module.sample(batch)
    module.score(rollout)
    # answers end at different lengths, as if they had sampled EOS there: rows of one length
    # would hide a mean taken per micro-batch
    ends = torch.tensor([12, 3, 7, 1, 9, 5])  # [N]
    rollout.completion_mask = (torch.arange(rollout.completion_ids.shape[1]) < ends[:, None]).long()  # [N, L]
    rollout.completion_ids = rollout.completion_ids.masked_fill(rollout.completion_mask == 0, module.processor.tokenizer.pad_token_id)
    one = update_gradients(module, rollout, 1, agg)
    every = update_gradients(module, rollout, rollout.num_rows, agg)
    assert any(g.abs().sum() > 0 for g in every)
    for a, b in zip(one, every):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_validation_logs_on_the_modules_device(module, monkeypatch):
    """sync_dist reduces through the process group; NCCL cannot reduce host tensors, so every
    value logged with it must be on the module's device (a meta device stands in for a GPU)."""
    from vinci.reward.format import RewardParts

    parts = RewardParts(overall=torch.tensor([0.5, 1.0]), visual=torch.tensor([0.6, 1.0]),
                        format=torch.tensor([1.0, 1.0]), rendered=torch.tensor([True, True]))
    logged = {}
    monkeypatch.setattr(module, "sample", lambda batch, greedy=False: SimpleNamespace(num_prompts=2))
    monkeypatch.setattr(module, "score", lambda rollout: parts)
    monkeypatch.setattr(module, "log", lambda name, value, **kw: logged.__setitem__(name, (value, kw)))
    monkeypatch.setattr(module, "_device", torch.device("meta"))
    module.validation_step(None, 0)
    synced = {name: value for name, (value, kw) in logged.items() if kw.get("sync_dist")}
    assert set(synced) == {"val/reward", "val/format", "val/render"}
    assert all(value.device.type == "meta" for value in synced.values())


def test_the_hf_sampler_log_probs_match_the_update(module):
    """generate records the log-prob of each token it drew; the update's old log-probs of the
    same tokens agree in fp32, so the rollout/ gap is ~0 and every weight is ~1."""
    batch = RLCollator(module.processor)(examples(3))
    with_sampler(module, prompts_per_generation=2, temperature=0.7)
    module.temperature = 0.7
    try:
        torch.manual_seed(5)
        rollout = module.sample(batch)
        module.score(rollout)
        assert rollout.sampler_logp.shape == rollout.completion_ids.shape
        stats = {}
        update_gradients(module, rollout, 2, "token-mean", stats)
    finally:
        module.temperature = 1.0
    assert stats["logp_gap_mean"] <= 1e-4 and stats["logp_gap_max"] <= 1e-3
    assert abs(stats["is_weight_mean"] - 1.0) <= 1e-3 and stats["is_clipped_frac"] == 0.0


def test_importance_weights_scale_the_gradient_and_at_one_leave_it_exactly(module):
    batch = RLCollator(module.processor)(examples(2))
    with_sampler(module, prompts_per_generation=None)
    torch.manual_seed(11)
    rollout = module.sample(batch)
    module.score(rollout)
    module.micro_batch_size = 2
    old = module.policy_logp(rollout)  # [N, L] what the update's first pass computes, micro-batch for micro-batch
    plain = update_gradients(module, rollout, 2, "token-mean")
    module.importance_correction = True
    try:
        runs = {}
        for shift in (0.0, 0.5, 2.0):  # sampler log-probs below the trainer's by `shift`: weight exp(shift), capped at 3
            rollout.sampler_logp = old - shift
            stats = {}
            runs[shift] = (update_gradients(module, rollout, 2, "token-mean", stats), stats)
    finally:
        module.importance_correction = False
    for a, b in zip(plain, runs[0.0][0]):
        assert torch.equal(a, b)  # weight 1: today's gradient, bit for bit
    for shift, factor, clipped in ((0.5, torch.tensor(0.5).exp().item(), 0.0), (2.0, 3.0, 1.0)):
        grads, stats = runs[shift]
        assert stats["is_clipped_frac"] == clipped and stats["logp_gap_mean"] == pytest.approx(shift, abs=1e-5)
        assert stats["is_weight_mean"] == pytest.approx(factor, rel=1e-5)
        for a, b in zip(plain, grads):
            torch.testing.assert_close(b, a * factor, atol=1e-7, rtol=1e-4)
