"""RolloutSampler's settings: chunks of a rollout batch, refused values, per-rank streams."""

import pytest

from callbacks.rollout import RolloutSampler, rank_seed


def test_a_rollout_batch_is_sampled_in_chunks_of_prompts():
    assert RolloutSampler(prompts_per_generation=None).chunks(5) == [(0, 5)]  # today's one generate call
    assert RolloutSampler(prompts_per_generation=2).chunks(5) == [(0, 2), (2, 4), (4, 5)]
    assert RolloutSampler(prompts_per_generation=8).chunks(5) == [(0, 5)]


@pytest.mark.parametrize("settings, message", [
    (dict(num_samples=1), "num_samples"),
    (dict(temperature=0.0), "temperature"),
    (dict(prompts_per_generation=0), "prompts_per_generation"),
    (dict(min_new_tokens=300, max_new_tokens=256), "min_new_tokens"),
])
def test_bad_settings_are_refused_by_name(settings, message):
    with pytest.raises(ValueError, match=message):
        RolloutSampler(**settings)


def test_the_sampler_refuses_a_module_scoring_at_another_temperature():
    class Module:
        temperature = 1.0

    with pytest.raises(ValueError, match="temperature 0.6.*1.0"):
        RolloutSampler(temperature=0.6).sample_chunk(Module(), None)


def test_each_rank_gets_its_own_stream():
    seeds = {rank_seed(0, rank) for rank in range(4)} | {rank_seed(1, 0)}
    assert len(seeds) == 5 and all(0 <= s < 2**63 for s in seeds)
