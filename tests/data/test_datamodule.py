"""The data module: length filtering that never truncates, and both batch kinds from a corpus."""

import pytest

from vinci.data.collate import RLBatch, SFTBatch, encode_sft
from vinci.data.datamodule import VinciDataModule


def _module(tiny_model, corpus, stage, max_length=1024):
    dm = VinciDataModule(stage=stage, train=str(corpus / f"{stage}_train.jsonl"), val=str(corpus / f"{stage}_val.jsonl"),
                         processor=str(tiny_model), batch_size=3, max_length=max_length)
    dm.setup("fit")
    return dm


def test_counted_lengths_equal_real_encodings(tiny_model, tiny_corpus):
    dm = _module(tiny_model, tiny_corpus, "sft")
    train = dm.datasets["train"]
    real = sorted(encode_sft(dm.processor, train[i])[0]["input_ids"].shape[1] for i in range(len(train)))
    # a max_length just under the longest row drops exactly the rows that are really longer
    cut = real[-1] - 1
    short = _module(tiny_model, tiny_corpus, "sft", max_length=cut)
    assert len(short.datasets["train"]) == sum(n <= cut for n in real)
    for i in range(len(short.datasets["train"])):
        assert encode_sft(dm.processor, short.datasets["train"][i])[0]["input_ids"].shape[1] <= cut


def test_everything_too_long_is_an_error(tiny_model, tiny_corpus):
    with pytest.raises(ValueError, match="max_length=10"):
        _module(tiny_model, tiny_corpus, "sft", max_length=10)


def test_batches_of_both_stages(tiny_model, tiny_corpus):
    sft = next(iter(_module(tiny_model, tiny_corpus, "sft").train_dataloader()))
    assert isinstance(sft, SFTBatch) and sft.labels.shape[0] == 3
    rl = next(iter(_module(tiny_model, tiny_corpus, "rl").train_dataloader()))
    assert isinstance(rl, RLBatch) and len(rl.images) == 3 and len(set(rl.languages)) >= 1
