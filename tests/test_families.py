"""Every model family vinci claims, through every stage, on its tiny-from-config fixture.

Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Idefics3 (SmolVLM), each: a plain model directory, the
released chat template's layout, an SFT step on answer tokens only, sampling whose log-probs the
update recomputes, QLoRA, vision-token suppression, plain-peft adapter reload, and one ViRL step
through the CLI with and without the KL term. Plus what makes a family itself: Qwen2.5-VL's
window attention and Qwen3-VL's deepstack must actually run.
"""

import re
from pathlib import Path

import bitsandbytes as bnb
import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from callbacks.rollout import RolloutSampler
from main import cli_main
from tests.test_virl import virl_config
from vinci.backbone import Backbone, Quantization, load_backbone, resolve_adapter, save_adapter, trainable_split
from vinci.data.collate import IGNORE, RLCollator, SFTCollator, full_text, prompt_text
from vinci.data.rows import Example
from vinci.families import FAMILIES, build_family
from vinci.generation import sample
from vinci.inputs import multimodal_token_ids
from vinci.rollout import sequence_inputs
from vinci.tiny import STAMP, TinySpec

PROMPT = "<image>Write the svg code that draws this image."
ANSWER = '```svg\n<svg><rect width="4"/></svg>\n```'
QWEN_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
QWEN_USER = ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Write the svg code that draws this image."
             "<|im_end|>\n<|im_start|>assistant\n")
SMOLVLM_USER = "<|im_start|>User:<image>Write the svg code that draws this image.<end_of_utterance>\nAssistant:"
RELEASED_PROMPT = {"qwen2_vl": QWEN_SYSTEM + QWEN_USER, "qwen2_5_vl": QWEN_SYSTEM + QWEN_USER,
                   "qwen3_vl": QWEN_USER, "idefics3": SMOLVLM_USER}
PROCESSOR = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor", "qwen3_vl": "Qwen3VLProcessor",
             "idefics3": "Idefics3Processor"}
QWEN_VISION = {"<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"}
VISION_TOKENS = {"qwen2_vl": QWEN_VISION, "qwen2_5_vl": QWEN_VISION, "qwen3_vl": QWEN_VISION,
                 "idefics3": {"<image>", "<fake_token_around_image>", "<global-img>"}
                 | {f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)}}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Models this small run fastest on one thread: on a shared CPU, a second thread that waits
    for a core made sampling and the update several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def answer_turn(family: str, answer: str) -> str:
    """What the released template writes after the prompt for an answer: it, and the end of turn."""
    return f" {answer}<end_of_utterance>\n" if family == "idefics3" else f"{answer}<|im_end|>\n"


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """An image whose patches all differ: on a flat colour, attention patterns would not show."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def examples() -> list[Example]:
    """Two rows of different lengths and image shapes (Idefics3: 2x2 tiles and 1x2 tiles, each + a global view)."""
    return [
        Example(noise(120, 90), PROMPT, "svg", ANSWER, "t:0"),
        Example(noise(160, 40, 1), PROMPT + " Keep it short.", "svg", "```svg\n<svg/>\n```", "t:1"),
    ]


def lora_step(model, batch, lr=1e-2) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model(**batch.inputs, labels=batch.labels).loss.backward()
    optimizer.step()


def test_folder_loads_with_the_plain_auto_classes(family_model):
    name, path = family_model
    model = AutoModelForImageTextToText.from_pretrained(str(path))
    processor = AutoProcessor.from_pretrained(str(path))
    assert type(model).__name__ == FAMILIES[name].model_class
    assert type(processor).__name__ == PROCESSOR[name]
    assert 1e6 < sum(p.numel() for p in model.parameters()) < 1e7  # "a few million parameters"
    code = "plt.bar([1, 2], [3, 4])"
    assert processor.tokenizer.decode(processor.tokenizer(code)["input_ids"]) == code
    end_of_turn = "<end_of_utterance>" if name == "idefics3" else "<|im_end|>"
    assert model.generation_config.eos_token_id == processor.tokenizer.convert_tokens_to_ids(end_of_turn)


def test_chat_template_lays_out_turns_and_images_as_the_released_one(family_model):
    name, path = family_model
    processor = AutoProcessor.from_pretrained(str(path))
    assert prompt_text(processor, PROMPT) == RELEASED_PROMPT[name]
    assert full_text(processor, PROMPT, ANSWER) == RELEASED_PROMPT[name] + answer_turn(name, ANSWER)
    encoded = processor(text=[RELEASED_PROMPT[name]], images=[noise(120, 90)], return_tensors="pt")
    tokens = processor.tokenizer.convert_ids_to_tokens(encoded["input_ids"][0].tolist())
    if name == "idefics3":  # 120x90 is scaled to 2x2 tiles of 64 px; 4 tokens per tile and for the global view
        assert encoded["pixel_values"].shape[:2] == (1, 5)
        markers = [t for t in tokens if re.fullmatch(r"<row_\d_col_\d>|<global-img>", t)]
        assert markers == ["<row_1_col_1>", "<row_1_col_2>", "<row_2_col_1>", "<row_2_col_2>", "<global-img>"]
        assert tokens.count("<image>") == 5 * 4 and tokens.count("<fake_token_around_image>") == 6
        assert tokens[tokens.index("<global-img>") + 5] == "<fake_token_around_image>"
    else:  # one <|image_pad|> per 2x2 merged patches, between one start and one end marker
        n = int(encoded["image_grid_thw"][0].prod()) // 4
        start = tokens.index("<|vision_start|>")
        assert tokens[start + 1 : start + n + 2] == ["<|image_pad|>"] * n + ["<|vision_end|>"]
        assert tokens.count("<|image_pad|>") == n and tokens.count("<|vision_start|>") == 1
        assert encoded["mm_token_type_ids"][0].sum() == n  # M-RoPE reads the image positions from it


def test_sft_step_learns_from_answer_tokens_only(family_model):
    name, path = family_model
    model, processor = load_backbone(Backbone(model=str(path)))
    language, vision = trainable_split(model)  # LoRA on the decoder only: the vision parts are named right
    assert language and not vision and all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    rows = examples()
    batch = SFTCollator(processor)(rows)
    banned = torch.tensor(multimodal_token_ids(model, processor.tokenizer))
    for row, example in enumerate(rows):
        labels = batch.labels[row]
        assert processor.tokenizer.decode(labels[labels != IGNORE]) == answer_turn(name, example.answer)
        assert (labels[torch.isin(batch.inputs["input_ids"][row], banned)] == IGNORE).all()
        assert (labels[batch.inputs["attention_mask"][row] == 0] == IGNORE).all()
    # The batch is its rows side by side: padding tokens, packed patches or Idefics3's padded tiles change nothing.
    model.eval()
    with torch.no_grad():
        together = model(**batch.inputs).logits  # [2, T, V]
        for row, example in enumerate(rows):
            alone = model(**SFTCollator(processor)([example]).inputs).logits[0]  # [t, V]
            torch.testing.assert_close(together[row, : alone.shape[0]], alone, atol=1e-4, rtol=0)
    model.train()
    out = model(**batch.inputs, labels=batch.labels)
    logits = out.logits[:, :-1].float()  # [2, T - 1, V] predicting tokens 1..T-1
    targets = batch.labels[:, 1:].reshape(-1)  # [2 * (T - 1)]
    by_hand = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets, ignore_index=IGNORE)
    torch.testing.assert_close(out.loss, by_hand)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    out.loss.backward()
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2).step()
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if n in before)
    assert model(**batch.inputs, labels=batch.labels).loss < out.loss


def test_sampler_log_probs_equal_the_update_recomputation(family_model, monkeypatch):
    """The update's log-probs, from one forward over left-padded prompt + completion, must equal
    those of the token-by-token decoding that sampled them: position ids, rope deltas (M-RoPE),
    deepstack and padded image tiles all have to line up."""
    _, path = family_model
    model, processor = load_backbone(Backbone(model=str(path)), trainable=False)
    batch = RLCollator(processor)(examples())
    assert (batch.inputs["attention_mask"][:, 0] == 0).any(), "expected a left-padded row"
    raw = []
    generate = model.generate

    def recording_generate(**kwargs):  # generate's own logits, before any logits processor
        out = generate(**kwargs, output_logits=True, return_dict_in_generate=True)
        raw.append(torch.stack(out.logits, dim=1))  # [N, L, V]
        return out.sequences

    monkeypatch.setattr(model, "generate", recording_generate)
    temperature = 0.7
    torch.manual_seed(0)
    done = sample(model, processor, batch.inputs, num_samples=2, max_new_tokens=6, temperature=temperature)
    ids, mask = done.completion_ids, done.completion_mask.bool()  # [4, L]
    sampled = torch.log_softmax(raw[0].float() / temperature, dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)

    inputs, ids_again, _ = sequence_inputs(batch, 2, done.completion_ids, done.completion_mask, [0, 1, 2, 3], "cpu")
    assert torch.equal(ids_again, ids)
    with torch.no_grad():  # ViRLModule.completion_logp, written out the straightforward way
        logits = model(**inputs, use_cache=False).logits[:, -ids.shape[1] - 1 : -1].float() / temperature  # [4, L, V]
    recomputed = torch.log_softmax(logits, dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)  # [4, L]
    assert mask.sum() >= 4
    torch.testing.assert_close(recomputed[mask], sampled[mask], atol=1e-4, rtol=0)


def test_qlora_step_changes_only_lora_tensors(family_model):
    _, path = family_model
    settings = Backbone(model=str(path), quantization=Quantization(load_in_4bit=True, compute_dtype="float32"))
    model, processor = load_backbone(settings)
    quantised = [m for n, m in model.named_modules() if n.endswith("q_proj.base_layer")]
    assert quantised and all(isinstance(m, bnb.nn.Linear4bit) and m.weight.quant_type == "nf4" for m in quantised)
    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    lora_step(model, SFTCollator(processor)(examples()))
    after = model.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    # bitsandbytes' CPU path rewrites the 4-bit layers' scaling constants (absmax) in a forward
    # pass (tests/test_backbone.py); the packed weights and every other base tensor stay put.
    quant_state = {n for n in changed if re.search(r"\.weight\.(absmax|nested_absmax|quant_state\..+)$", n)}
    assert any("lora_" in n for n in changed)
    assert all("lora_" in n for n in changed - quant_state), sorted(changed - quant_state)[:5]
    packed = [n for n in before if n.endswith("q_proj.base_layer.weight")]
    assert packed and all(torch.equal(before[n], after[n]) for n in packed)


def test_completions_never_contain_vision_tokens(family_model):
    name, path = family_model
    model, processor = load_backbone(Backbone(model=str(path)), trainable=False)
    banned = multimodal_token_ids(model, processor.tokenizer)
    assert set(processor.tokenizer.convert_ids_to_tokens(banned)) == VISION_TOKENS[name]

    def prefer_vision_tokens(module, args, logits):  # [N, T, V]: a policy biased toward them
        logits[..., banned] += 1e4
        return logits

    model.get_output_embeddings().register_forward_hook(prefer_vision_tokens)
    batch = RLCollator(processor)(examples()[:1])
    prompt_length = batch.inputs["input_ids"].shape[1]
    raw = model.generate(**batch.inputs, max_new_tokens=4, do_sample=False)  # the hazard is real
    assert torch.isin(raw[:, prompt_length:], torch.tensor(banned)).all()
    done = sample(model, processor, batch.inputs, num_samples=3, max_new_tokens=8)
    assert not torch.isin(done.completion_ids, torch.tensor(banned)).any()
    inputs, _, _ = sequence_inputs(batch, 3, done.completion_ids, done.completion_mask, [0, 1, 2], "cpu")
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()  # prompt + completion reads back as one image


def test_adapter_reloads_with_plain_peft(family_model, tmp_path):
    _, path = family_model
    model, processor = load_backbone(Backbone(model=str(path)))
    batch = SFTCollator(processor)(examples())
    lora_step(model, batch)
    model.eval()
    save_adapter(model, processor, tmp_path / "adapter")
    base = AutoModelForImageTextToText.from_pretrained(str(path)).eval()
    with torch.no_grad():
        untrained = base(**batch.inputs).logits
        reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
        ours, theirs = model(**batch.inputs).logits, reloaded(**batch.inputs).logits
    assert not torch.allclose(ours, untrained, atol=1e-4), "the step changed nothing"
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


def test_a_finished_build_is_reused_and_an_unfinished_one_redone(family_models, tmp_path):
    import shutil

    spec = TinySpec(texts_per_language=60)  # the fixtures' spec
    built = family_models("qwen3_vl")
    written = (built / "model.safetensors").stat().st_mtime_ns
    assert build_family("qwen3_vl", built, spec) == built
    assert (built / "model.safetensors").stat().st_mtime_ns == written
    unfinished = shutil.copytree(built, tmp_path / "copy")
    (unfinished / STAMP).unlink()  # as a build stopped before its last write leaves it
    build_family("qwen3_vl", unfinished, spec)
    assert (unfinished / STAMP).is_file() and (unfinished / "model.safetensors").stat().st_mtime_ns != written
    with pytest.raises(ValueError, match="unknown model family"):
        build_family("llava", tmp_path / "nope")


# ---- family-specific machinery --------------------------------------------------------------
def _image_inputs(processor):
    return processor(text=[prompt_text(processor, PROMPT)], images=[noise(120, 120)], return_tensors="pt")


def test_qwen2_5_vl_vision_tower_attends_within_windows(family_models):
    path = family_models("qwen2_5_vl")
    model = AutoModelForImageTextToText.from_pretrained(str(path)).eval()
    processor = AutoProcessor.from_pretrained(str(path))
    visual = model.model.visual
    assert visual.fullatt_block_indexes == [len(visual.blocks) - 1]
    encoded = _image_inputs(processor)  # 112x112 px: 4x4 merged tokens, four 2x2 windows
    with torch.no_grad():
        windowed = visual(encoded["pixel_values"], grid_thw=encoded["image_grid_thw"]).pooler_output
        visual.fullatt_block_indexes = list(range(len(visual.blocks)))
        full = visual(encoded["pixel_values"], grid_thw=encoded["image_grid_thw"]).pooler_output
    assert windowed.shape == full.shape
    assert not torch.allclose(windowed, full, atol=1e-4), "window attention did not change anything"


def test_qwen3_vl_deepstack_features_reach_the_decoder(family_models):
    path = family_models("qwen3_vl")
    model = AutoModelForImageTextToText.from_pretrained(str(path)).eval()
    processor = AutoProcessor.from_pretrained(str(path))
    visual = model.model.visual
    assert len(visual.deepstack_visual_indexes) == 2 and max(visual.deepstack_visual_indexes) < len(visual.blocks) - 1
    encoded = _image_inputs(processor)
    with torch.no_grad():
        with_deepstack = model(**encoded).logits
        for parameter in visual.deepstack_merger_list.parameters():
            parameter.zero_()  # deepstack now adds zeros to the early decoder layers
        without = model(**encoded).logits
    assert not torch.allclose(with_deepstack, without, atol=1e-4)


# ---- one ViRL step per family through the CLI ---------------------------------------------
class PlantAnswers(RolloutSampler):
    """A sampler that puts each prompt's reference answer in place of its first sample's text
    (the sampled tokens stay), so a random-weight policy's groups get rewards that differ and the
    update has a gradient."""

    def sample_chunk(self, module, chunk):
        done = super().sample_chunk(module, chunk)
        for prompt, answer in enumerate(chunk.answers):
            if answer:  # RL rows of the synthetic corpus carry their reference program
                done.texts[prompt * self.num_samples] = answer
        return done


def _lora(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(resolve_adapter(path) / "adapter_model.safetensors"))  # a run's adapter folder: its last/


def family_virl_config(tmp_path: Path, model: Path, corpus: Path, adapter, kl_coef: float) -> Path:
    """tests/test_virl.py's config with a family's model, 2 prompts x 2 short samples, the
    planted answers, and nothing the step does not need (no checkpoint, no image grids)."""
    path = virl_config(tmp_path, model, corpus, adapter, kl_coef=kl_coef)
    config = yaml.safe_load(path.read_text())
    config["checkpoint"] = None
    config["sampler"]["class_path"] = "tests.test_families.PlantAnswers"
    config["sampler"]["init_args"].update(num_samples=2, max_new_tokens=8)
    config["render"]["init_args"]["workers"] = 1
    config["reward_log"]["init_args"]["every_n_steps"] = 1000
    config["model"]["init_args"]["backbone"]["adapter"] = str(adapter) if adapter else None
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("kl_coef", [0.0, 0.1], ids=["no-kl", "kl"])
def test_one_virl_step_through_the_cli(family_model, tiny_corpus, tmp_path, kl_coef):
    name, path = family_model
    adapter = None
    if kl_coef:  # the reference policy is a frozen adapter: a fresh one, saved
        adapter = save_adapter(*load_backbone(Backbone(model=str(path))), tmp_path / "start")
    config_path = family_virl_config(tmp_path, path, tiny_corpus, adapter, kl_coef)

    cli = cli_main(["fit", "--config", str(config_path)])
    metrics = cli.trainer.callback_metrics
    assert cli.trainer.global_step == 1
    assert float(metrics["reward/overall_mean"]) > 0, "the planted answers should be rewarded"
    assert float(metrics["train/grad_norm"]) > 0
    model = cli.model.model
    after = _lora(tmp_path / "run" / "adapter")
    if kl_coef:
        assert set(model.peft_config) == {"default", "reference"}
        assert float(metrics["train/kl"]) == pytest.approx(0.0, abs=1e-6)  # the policy starts as the reference
        before = _lora(adapter)
        reference = {k: v for k, v in model.state_dict().items() if ".reference." in k}
        assert all(torch.equal(reference[k.replace(".weight", ".reference.weight")], v) for k, v in before.items())
        assert any(not torch.equal(before[k], after[k]) for k in before), "no LoRA weight moved"
    else:  # a fresh LoRA starts with B = 0, so the step must have moved some B
        assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in after.items())
    base = AutoModelForImageTextToText.from_pretrained(str(path)).state_dict()
    trained = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
               for k, v in model.state_dict().items() if "lora_" not in k}
    shared = [k for k in base if k in trained]
    assert len(shared) > len(base) // 2 and all(torch.equal(base[k], trained[k]) for k in shared)
