"""SFT end to end through the CLI on the tiny model and a tiny synthetic corpus, and resume."""

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from main import cli_main

ROOT = Path(__file__).resolve().parents[1]


def sft_config(tmp_path: Path, tiny_model: Path, corpus: Path, max_steps: int, extra_callbacks=()) -> Path:
    """configs/sft.yaml with every path moved under tmp_path and a small budget."""
    config = yaml.safe_load((ROOT / "configs" / "sft.yaml").read_text())
    run = tmp_path / "run"
    trainer = config["trainer"]
    trainer.update(max_steps=max_steps, val_check_interval=2, log_every_n_steps=1, default_root_dir=str(run))
    trainer["logger"]["init_args"]["save_dir"] = str(run)
    for group in ("checkpoint", "adapter"):
        args = config[group]["init_args"]
        args["dirpath"] = str(run / Path(args["dirpath"]).name)
    config["checkpoint"]["init_args"]["every_n_train_steps"] = 1
    trainer["callbacks"] = list(extra_callbacks)
    model = config["model"]["init_args"]
    model["backbone"].update(model=str(tiny_model), embedded=False)
    model["show_samples"] = 1
    model["sample_max_new_tokens"] = 8
    config["data"].update(synthetic=None, batch_size=2, train=str(corpus / "sft_train.jsonl"), val=str(corpus / "sft_val.jsonl"))
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_fit_trains_and_exports_a_peft_adapter(tmp_path, tiny_model, tiny_corpus):
    cli = cli_main(["fit", "--config", str(sft_config(tmp_path, tiny_model, tiny_corpus, max_steps=4))])
    assert cli.trainer.global_step == 4
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and torch.isfinite(metrics["val/loss"])
    adapter = tmp_path / "run" / "adapter" / "last"
    assert adapter.resolve().name == "step_4" and (tmp_path / "run" / "adapter" / "step_2").is_dir()  # one per checkpoint
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert (adapter / "tokenizer.json").is_file()  # the processor travels with the adapter
    events = list((tmp_path / "run").rglob("events.out.tfevents*"))
    assert events, "no TensorBoard log written"
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["state_dict"] and all("lora_" in k or "modules_to_save" in k for k in checkpoint["state_dict"])


class Interrupt(L.Callback):
    """Stops the run like Ctrl-C after a given optimizer step."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.at_step:
            raise KeyboardInterrupt


class RecordStart(L.Callback):
    def on_train_start(self, trainer, module):
        optimizer = trainer.optimizers[0]
        state = optimizer.state[optimizer.param_groups[0]["params"][0]]
        RecordStart.seen = (trainer.global_step, state["step"].clone(), state["exp_avg"].clone())


def test_resume_continues_from_the_same_step_and_optimizer_state(tmp_path, tiny_model, tiny_corpus):
    interrupt = {"class_path": "tests.test_sft.Interrupt", "init_args": {"at_step": 3}}
    config = sft_config(tmp_path, tiny_model, tiny_corpus, max_steps=6, extra_callbacks=[interrupt])
    with pytest.raises(SystemExit):  # Lightning exits after a graceful shutdown on Ctrl-C
        cli_main(["fit", "--config", str(config)])
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=False)
    # checkpoints run after other callbacks, so the last one written is the step before the interrupt
    assert saved["global_step"] == 2
    saved_state = saved["optimizer_states"][0]["state"][0]

    record = {"class_path": "tests.test_sft.RecordStart"}
    config = sft_config(tmp_path, tiny_model, tiny_corpus, max_steps=6, extra_callbacks=[record])
    second = cli_main(["fit", "--config", str(config), "--ckpt_path", "last"])
    step, optimizer_step, exp_avg = RecordStart.seen
    assert step == saved["global_step"]
    assert torch.equal(optimizer_step, saved_state["step"])
    assert torch.equal(exp_avg, saved_state["exp_avg"])
    assert second.trainer.global_step == 6


class RecordGroups(L.Callback):
    """Which parameters each optimizer group holds, and every group's lr after each step."""

    def on_train_start(self, trainer, module):
        names = {id(p): n for n, p in module.model.named_parameters()}
        RecordGroups.members = [[names[id(p)] for p in g["params"]] for g in trainer.optimizers[0].param_groups]
        RecordGroups.lrs = []

    def on_train_batch_end(self, trainer, *args):
        RecordGroups.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])


def test_vision_tower_trains_at_its_own_share_of_the_learning_rate(tmp_path, tiny_model, tiny_corpus):
    config = sft_config(tmp_path, tiny_model, tiny_corpus, max_steps=4,
                        extra_callbacks=[{"class_path": "tests.test_sft.RecordGroups"}])
    cli = cli_main(["fit", "--config", str(config), "--model.init_args.vision_lr_scale", "0.1"])
    language, vision = RecordGroups.members
    assert vision and all(".visual." in n for n in vision)
    assert language and not any(".visual." in n for n in language)
    trainable = {n for n, p in cli.model.model.named_parameters() if p.requires_grad}
    assert set(language) | set(vision) == trainable
    assert len(RecordGroups.lrs) == 4
    for language_lr, vision_lr in RecordGroups.lrs:  # warmup and cosine keep the ratio
        assert vision_lr == pytest.approx(0.1 * language_lr)
    assert len({lrs[0] for lrs in RecordGroups.lrs}) > 1  # the schedule did move the rates


def test_vision_lr_scale_must_be_positive(tiny_model):
    from vinci.backbone import Backbone
    from vinci.sft import SFTModule

    with pytest.raises(ValueError, match="vision_lr_scale"):
        SFTModule(Backbone(model=str(tiny_model)), vision_lr_scale=0.0)
