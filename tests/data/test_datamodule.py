"""The data module: length filtering that never truncates, lazy and full checks, both batch kinds."""

import pytest

from tests.data.conftest import SVG_PROMPT, b64_png, rl_row, sft_row, write_jsonl
from vinci.data.collate import RLBatch, SFTBatch, encode_sft
from vinci.data.datamodule import VinciDataModule


@pytest.fixture
def rows_dir(tmp_path):
    """sft/rl train and val files with answers of growing length (no renderer needed)."""
    sft, rl = [], []
    for i in range(6):
        image = b64_png((40 + 8 * i, 30))
        answer = "```svg\n<svg>" + " <rect/>" * (4 * i) + "</svg>\n```"
        sft.append(sft_row(image, answer=answer))
        rl.append(rl_row(image, prompt=SVG_PROMPT, answer=answer))
    for stage, rows in (("sft", sft), ("rl", rl)):
        write_jsonl(tmp_path / f"{stage}_train.jsonl", rows)
        write_jsonl(tmp_path / f"{stage}_val.jsonl", rows[:2])
    return tmp_path


def _module(tiny_model, folder, stage, max_length=1024, **kwargs):
    dm = VinciDataModule(stage=stage, train=str(folder / f"{stage}_train.jsonl"), val=str(folder / f"{stage}_val.jsonl"),
                         processor=str(tiny_model), batch_size=3, max_length=max_length, **kwargs)
    dm.setup("fit")
    return dm


def test_counted_lengths_equal_real_encodings(tiny_model, rows_dir):
    dm = _module(tiny_model, rows_dir, "sft", validate="full")
    train = dm.datasets["train"]
    real = sorted(encode_sft(dm.processor, train[i])[0]["input_ids"].shape[1] for i in range(len(train)))
    assert len(set(real)) > 2
    # a max_length just under the longest row drops exactly the rows that are really longer
    cut = real[-2]
    short = _module(tiny_model, rows_dir, "sft", max_length=cut, validate="full")
    assert len(short.datasets["train"]) == sum(n <= cut for n in real) and short.datasets["train"].skipped == {"too long": 1}
    for i in range(len(short.datasets["train"])):
        assert encode_sft(dm.processor, short.datasets["train"][i])[0]["input_ids"].shape[1] <= cut
    # lazily: the too-long rows are skipped when read (even under raise), and the same rows remain
    lazy = _module(tiny_model, rows_dir, "sft", max_length=cut)
    served = {lazy.datasets["train"][i].source for i in range(len(lazy.datasets["train"]))}
    assert served == {short.datasets["train"][i].source for i in range(len(short.datasets["train"]))}
    assert lazy.datasets["train"].skipped["too long"] >= 1


@pytest.mark.parametrize("validate", ["lazy", "full"])
def test_everything_too_long_is_an_error(tiny_model, rows_dir, validate):
    with pytest.raises(ValueError, match="max_length=10"):
        _module(tiny_model, rows_dir, "sft", max_length=10, validate=validate)


def test_batches_of_both_stages(tiny_model, rows_dir):
    sft = next(iter(_module(tiny_model, rows_dir, "sft").train_dataloader()))
    assert isinstance(sft, SFTBatch) and sft.labels.shape[0] == 3
    rl = next(iter(_module(tiny_model, rows_dir, "rl").train_dataloader()))
    assert isinstance(rl, RLBatch) and len(rl.images) == 3 and rl.languages == ["svg"] * 3


def test_sft_stage_needs_answers(tiny_model, tmp_path):
    image = b64_png()
    write_jsonl(tmp_path / "sft_train.jsonl", [rl_row(image, answer=None), rl_row(image)])
    write_jsonl(tmp_path / "sft_val.jsonl", [rl_row(image)])
    with pytest.raises(ValueError, match="row 0: field 'answer': missing answer"):
        _module(tiny_model, tmp_path, "sft")
    dm = _module(tiny_model, tmp_path, "sft", on_bad_row="skip")
    assert dm.datasets["train"][0].source.endswith(":row 1") and dm.datasets["train"].skipped == {"missing answer": 1}


def test_processor_rules_apply_before_a_batch(tiny_model, tmp_path):
    """A 1x3000 image passes the header checks but breaks Qwen processors: a bad row, not a crash."""
    good, thin = b64_png(), b64_png((3000, 1))
    write_jsonl(tmp_path / "sft_train.jsonl", [sft_row(good), sft_row(thin), sft_row(good)])
    write_jsonl(tmp_path / "sft_val.jsonl", [sft_row(good)])
    for validate in ("lazy", "full"):
        dm = _module(tiny_model, tmp_path, "sft", on_bad_row="skip", validate=validate)
        batch = next(iter(dm.train_dataloader()))
        train = dm.datasets["train"]
        assert batch.labels.shape[0] == len(train) == (3 if validate == "lazy" else 2)
        assert train.skipped == {"bad aspect ratio": 1}
    with pytest.raises(ValueError, match="row 1: field 'images': bad aspect ratio"):
        _module(tiny_model, tmp_path, "sft", validate="full")


def test_loaders_keep_their_workers_and_pin_memory_for_a_cuda_trainer(tiny_model, rows_dir, monkeypatch):
    """Without persistent workers each validation re-forks its workers from the multi-GB trainer;
    without pinned memory the host-to-GPU copies cannot overlap compute."""
    import lightning as L
    from lightning.pytorch.accelerators import CUDAAccelerator

    def loaders(dm):
        return dm.train_dataloader(), dm.val_dataloader()

    dm = _module(tiny_model, rows_dir, "sft", num_workers=2)
    assert all(loader.persistent_workers and not loader.pin_memory for loader in loaders(dm))  # no trainer yet
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    dm.trainer = trainer
    assert all(loader.persistent_workers and not loader.pin_memory for loader in loaders(dm))
    monkeypatch.setattr(trainer.strategy, "accelerator", CUDAAccelerator())  # as `accelerator: gpu` sets it
    assert all(loader.persistent_workers and loader.pin_memory for loader in loaders(dm))

    in_process = _module(tiny_model, rows_dir, "rl", num_workers=0)  # DataLoader refuses persistent workers here
    in_process.trainer = trainer
    assert all(not loader.persistent_workers and loader.pin_memory for loader in loaders(in_process))
