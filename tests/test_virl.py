"""ViRL through the CLI on the tiny model: one GRPO step, the KL path, resume, config errors."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from safetensors.torch import load_file

from callbacks.rollout import RolloutSampler
from main import cli_main
from vinci.backbone import resolve_adapter
from tests.test_sft import Interrupt, sft_config  # noqa: F401  (Interrupt is loaded by class_path)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sft_adapter(tmp_path_factory, tiny_model, tiny_corpus) -> Path:
    """A briefly trained SFT adapter, so sampled answers differ in reward."""
    tmp = tmp_path_factory.mktemp("sft")
    config = yaml.safe_load(sft_config(tmp, tiny_model, tiny_corpus, max_steps=100).read_text())
    config["trainer"]["limit_val_batches"] = 0
    config["model"]["init_args"]["show_samples"] = 0
    config["data"]["batch_size"] = 4
    config["model"]["init_args"]["optimizer"]["init_args"]["lr"] = 0.003
    # With configs/sft.yaml's 0.1, or with virl.yaml's T = 0.6, this 100-step adapter wrote no
    # rewarded program in test_one_step_...'s rollouts (corpus v1); these tests need one that does.
    config["model"]["init_args"]["vision_lr_scale"] = 1.0
    path = tmp / "sft_fast.yaml"
    path.write_text(yaml.safe_dump(config))
    cli_main(["fit", "--config", str(path)])
    return resolve_adapter(tmp / "run" / "adapter")  # its last/ folder


def virl_config(tmp_path, tiny_model, corpus, adapter, max_steps=1, kl_coef=0.0, extra_callbacks=(), sampler=None) -> Path:
    config = yaml.safe_load((ROOT / "configs" / "virl.yaml").read_text())
    run = tmp_path / "run"
    trainer = config["trainer"]
    trainer.update(max_steps=max_steps, default_root_dir=str(run))
    trainer["logger"]["init_args"]["save_dir"] = str(run)
    # T = 1 (VinciCoder's): a barely trained adapter needs it to hit the format
    config["sampler"]["init_args"].update(num_samples=4, max_new_tokens=200, temperature=1.0)
    config["reward_log"]["init_args"].update(every_n_steps=1, export_dir=str(run / "grids"))
    for group in ("checkpoint", "adapter"):
        args = config[group]["init_args"]
        args["dirpath"] = str(run / Path(args["dirpath"]).name)
    config["checkpoint"]["init_args"]["every_n_train_steps"] = 1
    if sampler is not None:
        config["sampler"]["class_path"] = sampler
    trainer["callbacks"] = list(extra_callbacks)
    model = config["model"]["init_args"]
    model["backbone"].update(model=str(tiny_model), embedded=False, adapter=str(adapter))
    model.update(kl_coef=kl_coef, micro_batch_size=8)
    model["optimizer"]["init_args"]["lr"] = 0.01
    config["data"].update(synthetic=None, batch_size=2, train=str(corpus / "rl_train.jsonl"))
    path = tmp_path / "virl.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _scalars(run: Path, tag: str) -> list[float]:
    """Every logged value of one TensorBoard scalar under `run`, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = run.rglob("events.out.tfevents.*")
    log = EventAccumulator(str(events), size_guidance={"scalars": 0})
    log.Reload()
    return [event.value for event in log.Scalars(tag)]


def _lora(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(resolve_adapter(path) / "adapter_model.safetensors"))  # a run's adapter folder: its last/


def test_one_step_changes_only_lora_and_logs_reward_parts(tmp_path, tiny_model, tiny_corpus, sft_adapter):
    cli = cli_main(["fit", "--config", str(virl_config(tmp_path, tiny_model, tiny_corpus, sft_adapter, max_steps=2))])
    metrics = cli.trainer.callback_metrics
    for key in ("reward/overall_mean", "reward/visual_mean", "reward/format_mean", "render/rate",
                "train/frac_reward_zero_std", "time/sample_s", "time/render_s", "time/update_s",
                "time/render_exposed_s", "time/score_s"):
        assert key in metrics, key
    # Step 1 samples the SFT adapter itself; step 2 samples it after one update at this test's
    # lr 0.01, which may already have broken every answer of a 100-step adapter.
    rewards = _scalars(tmp_path / "run", "reward/overall_mean")
    assert len(rewards) == 2, rewards
    assert rewards[0] > 0, "the SFT adapter should produce some rewarded programs"
    before, after = _lora(sft_adapter), _lora(tmp_path / "run" / "adapter")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before), "no LoRA weight moved"
    # the base weights are those on disk
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(str(tiny_model)).state_dict()
    trained = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
               for k, v in cli.model.model.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(base[k], trained[k]) for k in base if k in trained)
    assert list((tmp_path / "run" / "grids").glob("*.png")), "no image grid exported"


def test_kl_uses_the_frozen_sft_adapter_on_the_same_backbone(tmp_path, tiny_model, tiny_corpus, sft_adapter):
    cli = cli_main(["fit", "--config", str(virl_config(tmp_path, tiny_model, tiny_corpus, sft_adapter, kl_coef=0.1))])
    model = cli.model.model
    assert set(model.peft_config) == {"default", "reference"}
    assert "train/kl" in cli.trainer.callback_metrics
    sft = {k: v for k, v in _lora(sft_adapter).items() if "lora_" in k}
    reference = {k: v for k, v in model.state_dict().items() if "lora_" in k and ".reference." in k}
    assert len(reference) == len(sft)
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".reference." in n)
    for key, value in sft.items():
        ours = key.replace(".weight", ".reference.weight")
        assert torch.equal(reference[ours], value), key
    # The policy starts as the reference: the first step's KL is 0. (Before the reference got
    # its own tied output head, its logits came from the untrained base head: KL ~ 2 nats.)
    assert float(cli.trainer.callback_metrics["train/kl"]) == pytest.approx(0.0, abs=1e-6)
    # Switching adapters for the reference pass leaves only the policy's LoRA matrices trainable.
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and ".default." in n for n in trainable)


def test_reference_adapter_scores_like_the_policy_it_was_loaded_from(tiny_model, sft_adapter):
    """A second adapter loaded from the same files gives the same log-probs, tied head included."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from vinci.backbone import tie_output_head

    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(str(tiny_model)), str(sft_adapter))
    model.load_adapter(str(sft_adapter), adapter_name="reference", is_trainable=False)
    tie_output_head(model, "reference")
    ids = torch.arange(10, 40).unsqueeze(0)  # [1, 30] text tokens

    def logits(adapter):
        model.set_adapter(adapter)
        with torch.no_grad():
            return model(input_ids=ids).logits  # [1, 30, V]

    assert torch.equal(logits("reference"), logits("default"))
    assert model.get_output_embeddings().modules_to_save["reference"].weight is \
        model.get_input_embeddings().modules_to_save["reference"].weight


def test_old_log_probs_are_the_first_epochs_and_later_epochs_see_the_change(tmp_path, tiny_model, tiny_corpus, sft_adapter):
    """The first epoch's detached log-probs serve as the old log-probs: its ratios are exactly 1,
    so one epoch logs approx_kl 0; a second epoch runs after an optimizer step, against the same
    old log-probs, and must not."""
    config = str(virl_config(tmp_path, tiny_model, tiny_corpus, sft_adapter))
    one = cli_main(["fit", "--config", config]).trainer.callback_metrics
    assert float(one["train/approx_kl"]) == 0.0 and float(one["train/ratio_mean"]) == 1.0
    # weight decay moves the weights at the first step even when every group's rewards tie
    # max_steps counts optimizer steps: 2 is one rollout batch with two epochs
    trainer = cli_main(["fit", "--config", config, "--model.init_args.ppo_epochs", "2", "--trainer.max_steps", "2",
                        "--model.init_args.optimizer.init_args.weight_decay", "0.5"]).trainer
    two = trainer.callback_metrics
    assert float(two["train/approx_kl"]) > 0.0 and float(two["train/ratio_mean"]) != 1.0
    # the schedule steps with the optimizer, so its decay ends where max_steps does
    assert trainer.global_step == 2 and trainer.lr_scheduler_configs[0].scheduler.last_epoch == 2


def test_resume_mid_virl(tmp_path, tiny_model, tiny_corpus, sft_adapter):
    interrupt = {"class_path": "tests.test_sft.Interrupt", "init_args": {"at_step": 2}}
    with pytest.raises(SystemExit):  # Lightning exits after a graceful shutdown on Ctrl-C
        cli_main(["fit", "--config", str(virl_config(tmp_path, tiny_model, tiny_corpus, sft_adapter, 3, extra_callbacks=[interrupt]))])
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 1
    second = cli_main(["fit", "--config", str(virl_config(tmp_path, tiny_model, tiny_corpus, sft_adapter, 3)), "--ckpt_path", "last"])
    assert second.trainer.global_step == 3


def test_a_missing_callback_stops_the_fit_with_how_to_fix(tmp_path, tiny_model, tiny_corpus, sft_adapter):
    config = virl_config(tmp_path, tiny_model, tiny_corpus, sft_adapter)
    with pytest.raises(ValueError, match="(?s)RolloutSampler is missing.*configs/virl.yaml"):
        cli_main(["fit", "--config", str(config), "--sampler", "null"])


def test_missing_sft_adapter_says_run_sft_first(tmp_path, tiny_model, tiny_corpus):
    config = virl_config(tmp_path, tiny_model, tiny_corpus, tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="configs/sft.yaml"):
        cli_main(["fit", "--config", str(config)])


class PlantValidationAnswers(RolloutSampler):
    """A sampler that answers every held-out prompt with its reference program."""

    def answer(self, module, chunk):
        done = super().answer(module, chunk)
        done.texts[:] = list(chunk.answers)
        return done


def test_held_out_validation_during_fit_logs_format_render_and_visual(tmp_path, tiny_model, tiny_corpus, sft_adapter):
    """A ViRL recipe's long run shows whether it improves: every val_check_interval steps the
    sampler answers the held-out prompts greedily, the pool renders them, the module scores them."""
    path = virl_config(tmp_path, tiny_model, tiny_corpus, sft_adapter, max_steps=2, sampler="tests.test_virl.PlantValidationAnswers")
    cli = cli_main(["fit", "--config", str(path), f"--data.val={tiny_corpus / 'rl_val.jsonl'}",
                    "--trainer.limit_val_batches=1", "--trainer.val_check_interval=1", "--trainer.check_val_every_n_epoch=null"])
    metrics = cli.trainer.callback_metrics
    assert len(_scalars(tmp_path / "run", "val/reward")) == 2  # after each of the two steps
    # the reference programs, rendered with the corpus's own settings, score as their images
    assert float(metrics["val/format"]) == 1.0 and float(metrics["val/render"]) == 1.0
    assert float(metrics["val/visual"]) > 0.95 and float(metrics["val/reward"]) > 0.95


def test_the_policy_trains_in_train_mode_without_dropout(tiny_model, tmp_path):
    """Train mode (gradient checkpointing only runs in it) but no dropout: the update must score
    tokens as the sampler drew them, and the reference adapter's loading must not leave eval mode."""
    from vinci.backbone import Backbone, Lora, load_backbone, save_adapter
    from vinci.virl import ViRLModule

    adapter = save_adapter(*load_backbone(Backbone(model=str(tiny_model), lora=Lora(dropout=0.3))), tmp_path / "sft")
    module = ViRLModule(Backbone(model=str(tiny_model), adapter=str(adapter)), kl_coef=0.1)
    module.configure_model()
    assert module.model.training and all(m.training for m in module.model.modules())
    dropouts = [m for m in module.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(m.p == 0.0 for m in dropouts)


def test_16_mixed_clips_and_logs_the_unscaled_gradient_norm(tmp_path, tiny_model, tiny_corpus):
    """Under 16-mixed the loss is scaled (x65,536 at first) before backward; the clip and the
    logged norm must come after the scaler unscales. Lightning's precision flag turns 16-mixed into
    bf16 on a CPU, so the fp16 plugin with its gradient scaler is passed explicitly."""
    from tests.test_families import family_virl_config

    norms = {}
    for name, extra in (("32", []), ("16", ["--trainer.precision", "null", "--trainer.plugins", json.dumps(
            {"class_path": "lightning.pytorch.plugins.MixedPrecision", "init_args": {"precision": "16-mixed", "device": "cpu"}})])):
        (tmp_path / name).mkdir()
        config = family_virl_config(tmp_path / name, tiny_model, tiny_corpus, None, 0.0)  # planted answers: a gradient
        cli = cli_main(["fit", "--config", str(config), *extra])
        if name == "16":
            assert type(cli.trainer.precision_plugin).__name__ == "MixedPrecision" and cli.trainer.precision_plugin.scaler
        norms[name] = float(cli.trainer.callback_metrics["train/grad_norm"])
    assert norms["32"] > 0 and 0.1 < norms["16"] / norms["32"] < 10, norms


def test_virl_with_the_vllm_engine_logs_the_sampler_gap_validates_and_resumes(tmp_path, tiny_model, tiny_corpus, sft_adapter):
    """`--sampler.engine vllm`: the worker samples from the SFT adapter's embedding baked into a
    rollout base plus the policy's LoRA (vision tower included), handed over after every step.
    A run stopped after step 1 resumes from last.ckpt with a new worker and ends at step 3."""
    from tests.test_vllm_engine import PYTHON, require_vllm

    require_vllm()
    vllm = ["--sampler.engine=vllm", f"--sampler.vllm.python={PYTHON}", "--sampler.vllm.kv_cache_gb=1",
            f"--data.val={tiny_corpus / 'rl_val.jsonl'}", "--trainer.limit_val_batches=1", "--trainer.val_check_interval=1",
            "--trainer.check_val_every_n_epoch=null"]
    interrupt = {"class_path": "tests.test_sft.Interrupt", "init_args": {"at_step": 2}}
    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", str(virl_config(tmp_path, tiny_model, tiny_corpus, sft_adapter, 3, extra_callbacks=[interrupt])), *vllm])
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 1
    cli = cli_main(["fit", "--config", str(virl_config(tmp_path, tiny_model, tiny_corpus, sft_adapter, 3)), "--ckpt_path", "last", *vllm])
    assert cli.trainer.global_step == 3
    runs = sorted((tmp_path / "run" / "virl").glob("version_*"))  # the stopped run's and the resumed run's
    gaps = [value for run in runs for value in _scalars(run, "rollout/logp_gap_mean")]
    assert len(gaps) == 3 and max(gaps) <= 1e-3, gaps
    for name in ("logp_gap_max", "is_weight_mean", "is_clipped_frac"):
        assert sum(len(_scalars(run, f"rollout/{name}")) for run in runs) == 3
    assert sum(len(_scalars(run, "val/reward")) for run in runs) == 3  # greedy validation, answered by the worker
    worker = tmp_path / "run" / "vllm" / "rank0"
    assert (worker / "worker.log").is_file() and (worker / "rollout_base" / "config.json").is_file()
