"""read_benchmark on real corpora and small folders, and the data module serving a benchmark.

Only the html test and the broken-program tests render (in a real sandboxed RenderPool); the
chart corpus comes with its PNGs, so reading it renders nothing.
"""

from __future__ import annotations

import logging
import shutil

import pytest
from PIL import Image

from tests.conftest import require_tool
from tests.data.conftest import png_bytes, rl_row, write_jsonl
from vinci.data.benchmark import BenchmarkSet, default_references_dir, read_benchmark
from vinci.data.collate import RLBatch
from vinci.data.datamodule import Benchmark, VinciDataModule
from vinci.data.rows import BadRowError, RowSet
from vinci.render import RenderOptions
from vinci.reward.format import extract_code
from vinci.tasks import TASKS

PIXELS = dict(min_pixels=56 * 56, max_pixels=224 * 224)
SMALL_PAGE = RenderOptions(html_width=320, html_height=240, html_full_page=False)


def test_chart_corpus_reads_as_programs_with_their_pngs(corpora, tmp_path):
    folder = corpora / "chart"
    bench = read_benchmark(folder, references_dir=tmp_path / "refs", **PIXELS)

    assert isinstance(bench, BenchmarkSet) and bench.kind == "programs"
    scripts = len(list(folder.glob("*.py")))  # 86 in ../shared/corpora, 26 in the vendored sample
    assert scripts >= 20 and len(bench) == scripts and bench.languages() == {"python": scripts} and bench.skipped == {}
    assert bench.rendered == 0 and not (tmp_path / "refs").exists()
    assert [e.id for e in bench.rows] == sorted(p.stem for p in folder.glob("*.py"))
    for entry in bench.rows:
        assert entry.prompt == TASKS["python"].direct_prompt
        assert entry.answer.startswith("```python\n") and entry.answer.endswith("\n```")
        assert entry.image_path == (folder / f"{entry.id}.png").resolve()
        assert PIXELS["min_pixels"] <= entry.image_size[0] * entry.image_size[1] <= PIXELS["max_pixels"]
    example = bench[3]
    assert example.source == str(folder / f"{example.id}.py")
    assert extract_code(example.answer, "python") == (folder / f"{example.id}.py").read_text().strip()
    assert example.image.mode == "RGB" and example.image.size == bench.rows[3].image_size


def test_limit_takes_the_first_entries_in_name_order(corpora):
    bench = read_benchmark(corpora / "chart", limit=5, **PIXELS)
    assert [e.id for e in bench.rows] == sorted(p.stem for p in (corpora / "chart").glob("*.py"))[:5]


def test_pages_without_pngs_are_rendered_once_then_cached(corpora, tmp_path, monkeypatch):
    require_tool("chromium", "chromedriver")
    pages = tmp_path / "pages"
    pages.mkdir()
    for page in sorted((corpora / "html").glob("*.html"))[:3]:
        shutil.copy(page, pages / page.name)
    monkeypatch.chdir(tmp_path)  # the default cache lies under ./artifacts

    first = read_benchmark(pages, render_options=SMALL_PAGE, workers=1, **PIXELS)

    cache = default_references_dir(pages, SMALL_PAGE)
    assert cache.is_relative_to("artifacts/references") and cache.is_dir()
    assert len(first) == 3 and first.rendered == 3 and first.languages() == {"html": 3}
    assert sorted(p.name for p in pages.iterdir()) == sorted(e.id + ".html" for e in first.rows)  # input untouched
    cached = {p.resolve(): p.stat().st_mtime_ns for p in cache.glob("*.png")}
    assert sorted(cached) == sorted(e.image_path for e in first.rows) and len(cached) == 3
    assert first[0].image.size == first.rows[0].image_size
    assert first[0].prompt == TASKS["html"].direct_prompt and extract_code(first[0].answer, "html")

    again = read_benchmark(pages, render_options=SMALL_PAGE, workers=1, **PIXELS)

    assert again.rendered == 0 and [e.image_path for e in again.rows] == [e.image_path for e in first.rows]
    assert {p.resolve(): p.stat().st_mtime_ns for p in cache.glob("*.png")} == cached
    assert default_references_dir(pages, RenderOptions()) != cache  # other options, other renders


def _broken_folder(tmp_path):
    folder = tmp_path / "icons"
    folder.mkdir()
    (folder / "good.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="40" height="30">'
                                     '<rect width="20" height="10" fill="red"/></svg>')
    (folder / "broken.svg").write_text("<svg><rect")
    return folder


def test_a_program_whose_reference_fails_to_render_is_a_bad_row(tmp_path):
    with pytest.raises(BadRowError, match=r"broken\.svg: reference render failed") as caught:
        read_benchmark(_broken_folder(tmp_path), references_dir=tmp_path / "refs", workers=1, **PIXELS)
    assert caught.value.file.endswith("broken.svg")


def test_skip_mode_counts_the_failed_render(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="vinci.data.benchmark"):
        bench = read_benchmark(_broken_folder(tmp_path), references_dir=tmp_path / "refs", workers=1,
                               on_bad_row="skip", **PIXELS)
    assert [e.id for e in bench.rows] == ["good"] and bench.skipped == {"reference render failed": 1}
    assert any("skipped 1 of 2 entries" in r.getMessage() for r in caplog.records)
    assert sorted(p.name for p in (tmp_path / "icons").iterdir()) == ["broken.svg", "good.svg"]


def test_corrupt_png_and_shared_names_are_bad_rows(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "chart.py").write_text("import matplotlib.pyplot as plt\nplt.plot([1, 2])\n")
    (folder / "chart.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    with pytest.raises(BadRowError, match=r"chart\.png: corrupt image"):
        read_benchmark(folder, **PIXELS)
    for name in ("twin.py", "twin.svg"):
        (folder / name).write_text("<svg/>" if name.endswith("svg") else "print(1)\n")
    (folder / "twin.png").write_bytes(png_bytes())
    with pytest.raises(BadRowError, match=r"twin\.py: ambiguous name: twin\.py and twin\.svg"):
        read_benchmark(folder, **PIXELS)
    bench = read_benchmark(folder, on_bad_row="skip", **PIXELS)
    assert len(bench) == 0 and bench.skipped == {"corrupt image": 1, "ambiguous name": 2}
    only_svg = read_benchmark(folder, language="svg", **PIXELS)  # the language filter lifts the ambiguity
    assert [(e.id, e.language) for e in only_svg.rows] == [("twin", "svg")]


def test_images_only_folder_needs_a_language(tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes((80, 60), (0, 0, 255, 0), mode="RGBA"))
    Image.new("RGB", (70, 50), "green").save(folder / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"shots.*set language"):
        read_benchmark(folder, **PIXELS)

    bench = read_benchmark(folder, language="tikz", **PIXELS)

    assert bench.kind == "images" and [e.id for e in bench.rows] == ["a", "b"]
    example = bench[0]
    assert example.language == "latex" and example.prompt == TASKS["latex"].direct_prompt
    assert example.answer is None and example.id == "a" and example.source == str(folder / "a.png")
    assert example.image.mode == "RGB" and example.image.getpixel((0, 0)) == (255, 255, 255)


def test_a_folder_of_nothing_usable_says_what_it_found(tmp_path):
    (tmp_path / "README.md").write_text("hello")
    (tmp_path / "rows.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"found 1 \.md, 1 \.jsonl; point at a rows file"):
        read_benchmark(tmp_path)


def test_rows_files_go_through_read_rows(tmp_path, pngs):
    path = write_jsonl(tmp_path / "heldout.jsonl", [
        rl_row(pngs["red"]), rl_row(pngs["clear"], prompt="<image>Write the svg code that draws this image."),
    ])
    rows = read_benchmark(path, **PIXELS)
    assert isinstance(rows, RowSet) and len(rows) == 2
    assert [rows[i].id for i in range(2)] == ["heldout-row0", "heldout-row1"]
    svg_only = read_benchmark(path, language="svg", **PIXELS)
    assert len(svg_only) == 1 and svg_only[0].id == "heldout-row1"


def test_datamodule_serves_the_benchmark_to_test_and_predict(tiny_model, tiny_corpus, corpora, tmp_path):
    shots = tmp_path / "shots"
    shots.mkdir()
    for stem in ("x", "y"):
        (shots / f"{stem}.png").write_bytes(png_bytes((90, 60), "red"))
    charts = Benchmark(dir=str(corpora / "chart"), limit=4)
    dm = VinciDataModule(stage="rl", train=str(tiny_corpus / "rl_train.jsonl"), val=str(tiny_corpus / "rl_val.jsonl"),
                         benchmark=charts, processor=str(tiny_model), batch_size=3)

    dm.setup("test")
    batches = list(dm.test_dataloader())
    assert all(isinstance(b, RLBatch) for b in batches) and [len(b.ids) for b in batches] == [3, 1]
    assert batches[0].ids == sorted(p.stem for p in (corpora / "chart").glob("*.py"))[:3]
    assert all(s.endswith(f"{i}.py") for s, i in zip(batches[0].sources, batches[0].ids))

    dm.setup("fit")  # fit keeps validating on its own split
    val = next(iter(dm.val_dataloader()))
    assert val.ids[0] == "rl_val-row0" and val.sources[0].endswith("rl_val.jsonl:row 0")

    dm = VinciDataModule(stage="rl", benchmark=Benchmark(dir=str(shots), language="svg"),
                         processor=str(tiny_model), batch_size=3)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch.ids == ["x", "y"] and batch.answers == [None, None] and batch.languages == ["svg", "svg"]


def test_missing_references_are_drawn_like_the_models_answers(tiny_model, tmp_path, monkeypatch):
    """With no `render` of its own, the benchmark draws references with the evaluating module's
    render options, so reference and answer share a scale."""
    from types import SimpleNamespace

    monkeypatch.chdir(tmp_path)  # the default reference cache lives under ./artifacts
    icons = tmp_path / "icons"
    icons.mkdir()
    (icons / "dot.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="6"/></svg>')
    dm = VinciDataModule(stage="rl", benchmark=Benchmark(dir=str(icons)), processor=str(tiny_model),
                         min_pixels=16, max_pixels=10**6)
    dm.trainer = SimpleNamespace(lightning_module=SimpleNamespace(render_options=RenderOptions(svg_width=120)))
    dm.setup("test")
    assert dm.datasets["benchmark"][0].image.size == (120, 120)
