"""build_corpus with the real renderers: files, splits, both schemas, and a read-back via read_rows."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tests.conftest import require_tool
from vinci import tasks
from vinci.data.rows import read_rows
from vinci.data.synth import build_corpus, generate, read_manifest
from vinci.data.synth.__main__ import main
from vinci.render import RenderPool

SIZES = {"n_train": 3, "n_val": 1, "n_test": 2}
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def pool():
    with RenderPool(workers=2) as shared:  # one warm pool for every build here (start-up is seconds)
        yield shared


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, pool):
    require_tool("chromium", "chromedriver", "pdflatex", "pdftoppm")
    return build_corpus(tmp_path_factory.mktemp("corpus") / "synth", seed=5, refine_fraction=0.5, pool=pool, **SIZES)


def test_manifest_and_files(corpus):
    manifest = read_manifest(corpus)
    assert manifest["seed"] == 5 and manifest["languages"] == list(tasks.LANGUAGES)
    for split, n in zip(SPLITS, SIZES.values()):
        for lang in tasks.LANGUAGES:
            count = manifest["counts"][split][lang]
            assert count == {"programs": n, "dropped": 0, "direct": n, "refine": round(0.5 * n)}
        rows = sum(c["direct"] + c["refine"] for c in manifest["counts"][split].values())
        for schema in ("sft", "rl"):
            lines = (corpus / f"{schema}_{split}.jsonl").read_text().splitlines()
            assert len(lines) == rows == manifest["files"][f"{schema}_{split}.jsonl"]


@pytest.mark.parametrize("schema", ["sft", "rl"])
@pytest.mark.parametrize("split", SPLITS)
def test_rows_read_back(corpus, schema, split):
    rowset = read_rows(corpus / f"{schema}_{split}.jsonl", min_pixels=32 * 32, max_pixels=160 * 160)
    assert rowset.schema == schema and rowset.skipped == {}
    n = SIZES[f"n_{split}"]
    assert rowset.languages() == {lang: n + round(0.5 * n) for lang in tasks.LANGUAGES}
    for i in range(len(rowset)):
        example = rowset[i]
        assert tasks.language_from_prompt(example.prompt) == example.language  # prompt and column agree
        assert example.answer.startswith(f"```{tasks.TASKS[example.language].fence}\n")
        assert example.image.mode == "RGB" and 32 * 32 <= example.image.width * example.image.height <= 160 * 160
        extrema = example.image.convert("L").getextrema()
        assert extrema[0] < 200 < extrema[1]  # something dark drawn on a light background


def test_rows_hold_the_generated_programs_in_their_splits(corpus):
    rows = [json.loads(line) for line in (corpus / "sft_train.jsonl").read_text().splitlines()]
    rl_rows = [json.loads(line) for line in (corpus / "rl_train.jsonl").read_text().splitlines()]
    for lang in tasks.LANGUAGES:
        programs = generate(lang, sum(SIZES.values()), seed=5)
        answers = {r["messages"][1]["content"] for r in rows if r["language"] == lang}
        assert answers == {tasks.fence(p.code, lang) for p in programs[: SIZES["n_train"]]}
        for row in rows:
            if row["language"] == lang and row["task"] == "refine":
                program = next(p for p in programs if tasks.fence(p.code, lang) == row["messages"][1]["content"])
                assert row["messages"][0]["content"] == tasks.TASKS[lang].refine_prompt.format(code=program.flawed_code)
                assert row["flaw"] == program.flaw
    assert [r["problem"] for r in rl_rows] == [r["messages"][0]["content"] for r in rows]
    assert [r["images"] for r in rl_rows] == [r["images"] for r in rows]
    images = {r["images"][0] for r in rows}
    assert all(name.startswith("images/train/") and Image.open(corpus / name).format == "PNG" for name in images)


def test_same_seed_same_bytes_and_rebuild_in_place(tmp_path, pool):
    small = dict(n_train=2, n_val=1, n_test=1, languages=["python", "svg"], pool=pool)
    first = build_corpus(tmp_path / "a", seed=1, **small)
    second = build_corpus(tmp_path / "b", seed=1, **small)
    names = sorted(p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(second).as_posix() for p in second.rglob("*") if p.is_file())
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in names)

    # the command line, with its own pool; svg only, so no browser or TeX starts
    main(["--out", str(first), "--seed", "2", "--languages", "svg", "--n-train", "1", "--n-val", "0", "--n-test", "1"])
    assert read_manifest(first)["seed"] == 2
    assert not list((first / "images").rglob("python_*.png"))  # the old corpus' files are gone


def test_an_interrupted_build_is_not_complete_and_is_redone(tmp_path, pool):
    out = tmp_path / "corpus"
    (out / "images" / "train").mkdir(parents=True)
    (out / "images" / "train" / "svg_0009.png").write_bytes(b"half written")
    (out / "sft_train.jsonl").write_text("{")
    assert read_manifest(out) is None
    build_corpus(out, n_train=1, n_val=0, n_test=0, languages=["svg"], refine_fraction=1.0, pool=pool)
    assert read_manifest(out)["files"]["sft_train.jsonl"] == 2  # one direct + one refine row
    assert not (out / "images" / "train" / "svg_0009.png").exists()
    assert len(read_rows(out / "sft_train.jsonl")) == 2


def test_refuses_foreign_folders_and_bad_arguments(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        build_corpus(tmp_path, n_train=1, n_val=0, n_test=0, languages=["svg"])
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="refine_fraction"):
        build_corpus(tmp_path / "x", refine_fraction=1.5)
    with pytest.raises(ValueError, match="unknown language"):
        build_corpus(tmp_path / "x", languages=["cobol"])
    assert read_manifest(tmp_path / "x") is None


def _killed_build(out: str) -> None:
    import os
    import signal

    import vinci.data.synth.corpus as corpus

    def write_then_die(path, rows):
        path.write_text("{")  # half a file
        os.kill(os.getpid(), signal.SIGKILL)

    corpus._write_jsonl = write_then_die
    corpus.build_corpus(out, seed=3, n_train=1, n_val=0, n_test=0, languages=["svg"])


def test_a_killed_rebuild_leaves_the_earlier_corpus_whole(tmp_path, pool):
    import multiprocessing
    import signal

    out = tmp_path / "corpus"
    build_corpus(out, seed=1, n_train=1, n_val=0, n_test=0, languages=["svg"], pool=pool)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    child = multiprocessing.get_context("fork").Process(target=_killed_build, args=(str(out),))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert read_manifest(out)["seed"] == 1
    build_corpus(out, seed=2, n_train=1, n_val=0, n_test=0, languages=["svg"], pool=pool)
    assert read_manifest(out)["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]  # the killed build's folder is gone
