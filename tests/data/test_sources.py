"""Every source kind: shard folders, globs, save_to_disk folders, and hub ids from a fake local cache."""

from __future__ import annotations

import datasets
import huggingface_hub
import pytest

from tests.data.conftest import SVG_PROMPT, png_bytes, rl_row, sft_row
from functools import partial

from vinci.data.rows import BadRowError
from vinci.data.rows import read_rows as _read_rows

read_rows = partial(_read_rows, min_pixels=100)  # small images keep their size


def _shards(folder, split, groups):
    """Write the hub's layout: data/{split}-0000i-of-0000n.parquet, one file per group of rows."""
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    for i, rows in enumerate(groups):
        datasets.Dataset.from_list(rows).to_parquet(str(data / f"{split}-{i:05d}-of-{len(groups):05d}.parquet"))
    return folder


def _row(n, color="red"):
    return sft_row({"bytes": png_bytes((30 + n, 20), color), "path": None}, answer=f"```svg\n<svg id='{n}'/>\n```")


def test_shard_folder_reads_every_shard_of_the_role_split(tmp_path):
    repo = _shards(tmp_path / "repo", "train", [[_row(0), _row(1)], [_row(2)], [_row(3)]])
    _shards(repo, "test", [[_row(9, "blue")]])
    train = read_rows(repo)
    assert len(train) == 4 and [train[i].answer.count("id='") for i in range(4)] == [1] * 4
    assert sorted(train[i].image.width for i in range(4)) == [30, 31, 32, 33]
    assert train[3].source == f"{repo}:row 3" and train[3].id == "repo-row3"
    test = read_rows(repo, role="test")
    assert len(test) == 1 and test[0].image.getpixel((0, 0)) == (0, 0, 255)
    assert len(read_rows(f"{repo}@test")) == 1
    assert len(read_rows(repo / "data")) == 4  # the data folder itself


def test_glob_and_lazy_mode(tmp_path):
    repo = _shards(tmp_path / "repo", "train", [[_row(0)], [_row(1)], [_row(2)]])
    rows = read_rows(str(repo / "data" / "train-0000[01]-*.parquet"), validate="lazy")
    assert len(rows) == 2 and not rows.validated and rows[1].image.width == 31
    with pytest.raises(BadRowError, match="no file matches"):
        read_rows(str(repo / "nothing-*.parquet"))


def test_save_to_disk_folder(tmp_path):
    datasets.Dataset.from_list([_row(0)]).save_to_disk(str(tmp_path / "saved"))
    assert read_rows(tmp_path / "saved")[0].language == "svg"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An offline machine whose hub cache holds org/charts as `hf download` leaves it."""
    hub = tmp_path / "hf" / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    repo = hub / "datasets--org--charts"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    _shards(snapshot, "train", [[_row(0), _row(1)], [_row(2)]])
    (snapshot / "small").mkdir()
    datasets.Dataset.from_list([_row(7, "blue")]).to_parquet(str(snapshot / "small" / "val.parquet"))
    datasets.Dataset.from_list([_row(8, "blue"), _row(9)]).to_parquet(str(snapshot / "small" / "extra.parquet"))
    (snapshot / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*.parquet\n"
        "- config_name: small\n  data_files:\n  - split: validation\n    path: small/val.parquet\n"
        "  - split: extra\n    path: small/extra.parquet\n---\n# charts\n")
    return snapshot


def test_hub_id_from_the_local_cache_offline(hub_cache):
    rows = read_rows("org/charts")
    assert len(rows) == 3 and rows[2].source == "org/charts:row 2" and rows[0].id == "charts-row0"
    assert sorted(rows[i].image.width for i in range(3)) == [30, 31, 32]
    assert rows.base_dir == hub_cache
    assert len(read_rows("org/charts:small", role="val")) == 1  # a config, its split picked by role
    extra = read_rows("org/charts:small@extra")
    assert len(extra) == 2 and extra[0].image.getpixel((0, 0)) == (0, 0, 255)


def test_hub_id_not_cached_offline_says_how_to_fetch_it(hub_cache):
    with pytest.raises(BadRowError) as info:
        read_rows("org/missing")
    message = str(info.value)
    assert info.value.reason == "not in the local cache"
    assert "hf download org/missing --repo-type dataset" in message and "HF_HUB_OFFLINE" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no datasets traceback chained


def test_a_missing_path_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(BadRowError, match="no such file"):
        read_rows("data/train.jsonl")


def test_prepared_datasets_cache_is_used_offline(tmp_path, hub_cache, datasets_cache):
    """A dataset once loaded online sits in the datasets cache as org___name/...: offline reads it there."""
    hub_cache.parent.parent.joinpath("refs", "main").unlink()  # no hub snapshot to fall back on
    prepared = datasets.load_dataset(str(hub_cache), split="train")  # what an online load leaves behind
    target = datasets_cache / "org___charts" / "default" / "0.0.0" / "abc"
    target.mkdir(parents=True)
    for file in prepared.cache_files:
        (target / "charts-train.arrow").write_bytes(open(file["filename"], "rb").read())
    prepared.info.splits = datasets.SplitDict({"train": datasets.SplitInfo("train", num_examples=len(prepared),
                                                                         shard_lengths=None)})
    prepared.info.write_to_directory(str(target))
    rows = read_rows("org/charts")
    assert len(rows) == 3


def test_rl_rows_in_a_shard_folder(tmp_path):
    repo = _shards(tmp_path / "rl", "train", [[rl_row({"bytes": png_bytes(), "path": None}, prompt=SVG_PROMPT)]])
    assert read_rows(repo).schema == "rl"
