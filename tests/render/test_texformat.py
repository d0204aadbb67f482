"""Preamble formats for pdflatex: same pixels as the plain compile, and a cache that engages,
refuses what it must, and forgets a format that fails."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor

import pytest
from PIL import ImageChops

from tests.conftest import require_tool
from vinci.render.latex import FORMAT_FILE, make_document, render_latex
from vinci.render.options import RenderOptions
from vinci.render.protocol import frame_to_image
from vinci.render.result import RenderFailure
from vinci.render.texformat import FormatCache, preamble_key
from vinci.render.worker import Worker

PREAMBLE = "\\documentclass[tikz,border=4pt]{standalone}\n\\usetikzlibrary{arrows.meta}\n"
FIGURE = PREAMBLE + "\\begin{document}\n\\begin{tikzpicture}\\draw[->,red] (0,0) -- (2,1);\\end{tikzpicture}\n\\end{document}\n"
OTHER = FIGURE.replace("red", "blue").replace("(2,1)", "(1,2)")
OPTIONS = RenderOptions(latex_dpi=100)


def same_pixels(a, b) -> bool:
    return a.size == b.size and ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None


def test_key_is_the_preamble_and_refuses_unclear_documents():
    assert preamble_key(FIGURE) == preamble_key(OTHER)
    assert preamble_key(FIGURE) != preamble_key(FIGURE.replace("border=4pt", "border=5pt"))
    assert preamble_key("\\documentclass{article}\n% \\begin{document}\n" + FIGURE[FIGURE.index("\\begin") :]) is None
    assert preamble_key(PREAMBLE + "\\endofdump\n\\begin{document}x\\end{document}") is None
    assert preamble_key("\\tikz\\draw (0,0) -- (1,1);") is None  # no document environment


def test_cache_builds_on_the_second_sighting_and_evicts_the_oldest(tmp_path):
    cache = FormatCache(capacity=1)
    assert cache.plan(FIGURE)[0] == "plain"
    mode, key = cache.plan(OTHER)  # same preamble, second sighting
    assert mode == "build"
    (tmp_path / FORMAT_FILE).write_bytes(b"format bytes")
    cache.settle(mode, key, str(tmp_path), finished=True)
    assert cache.plan(FIGURE) == ("cached", key)
    job = tmp_path / "job"
    job.mkdir()
    cache.install(key, str(job))
    assert (job / FORMAT_FILE).read_bytes() == b"format bytes"
    article = "\\documentclass{article}\n\\begin{document}x\\end{document}"
    cache.plan(article)
    mode, other = cache.plan(article)
    cache.settle(mode, other, str(tmp_path), finished=True)
    assert list(cache.formats) == [other]  # capacity 1: the older format went
    assert FormatCache(capacity=0).plan(FIGURE)[0] == "plain"


def test_cache_drops_failing_formats_and_refuses_links(tmp_path):
    cache = FormatCache(build_after=1)
    mode, key = cache.plan(FIGURE)
    target = tmp_path / "elsewhere"
    target.write_bytes(b"not yours")
    (tmp_path / FORMAT_FILE).symlink_to(target)
    cache.settle(mode, key, str(tmp_path), finished=True)  # a link is never read
    assert key not in cache.formats and cache.failures[key] == 1
    (tmp_path / FORMAT_FILE).unlink()
    (tmp_path / FORMAT_FILE).write_bytes(b"fmt")
    cache.settle(*cache.plan(FIGURE), str(tmp_path), finished=False)  # a job that never finished
    assert key not in cache.formats and cache.failures[key] == 2
    assert cache.plan(FIGURE)[0] == "plain"  # two failed builds: plain from now on

    cache = FormatCache(build_after=1)
    mode, key = cache.plan(FIGURE)
    cache.settle(mode, key, str(tmp_path), finished=True)
    (tmp_path / FORMAT_FILE).unlink()  # the job deleted it: its compile failed where plain succeeded
    cache.settle(*cache.plan(FIGURE), str(tmp_path), finished=True)
    assert key not in cache.formats


@pytest.fixture
def tex(tmp_path, monkeypatch):
    require_tool("pdflatex", "pdftoppm", "pdfinfo")

    def compile_in(name: str, code: str, tex_format: str = "plain", fmt: bytes | None = None):
        job = tmp_path / name
        job.mkdir()
        if fmt is not None:
            (job / FORMAT_FILE).write_bytes(fmt)
        monkeypatch.chdir(job)
        return render_latex(code, OPTIONS, 60.0, tex_format), job

    return compile_in


def test_a_built_and_a_cached_format_draw_what_plain_draws(tex):
    plain, _ = tex("plain", OTHER)
    built, job = tex("build", OTHER, "build")
    assert same_pixels(built, plain)
    fmt = (job / FORMAT_FILE).read_bytes()  # kept for the worker to collect
    assert len(fmt) > 100_000
    cached, _ = tex("cached", OTHER, "cached", fmt)
    assert same_pixels(cached, plain)
    first, _ = tex("first", FIGURE)
    assert not same_pixels(first, plain)  # the body really is drawn from this document


def test_a_broken_format_falls_back_to_plain_and_is_deleted(tex):
    plain, _ = tex("plain", FIGURE)
    image, job = tex("garbage", FIGURE, "cached", b"\x00not a format\xff" * 100)
    assert same_pixels(image, plain)
    assert not (job / FORMAT_FILE).exists()  # tells the worker to drop it


def test_a_broken_body_fails_as_in_plain_and_keeps_the_format(tex, tmp_path):
    broken = FIGURE.replace("\\end{tikzpicture}", "\\undefinedmacro\\end{tikzpicture}")
    with pytest.raises(RenderFailure) as plain:
        tex("plain", broken)
    with pytest.raises(RenderFailure) as built:
        tex("build", broken, "build")
    assert built.value.kind == plain.value.kind == "crash"
    assert built.value.error == plain.value.error and "Undefined control sequence" in plain.value.error
    assert (tmp_path / "build" / FORMAT_FILE).is_file()  # the preamble was not at fault: keep its format


def _compile_in(job: str, code: str, tex_format: str) -> tuple[bytes, tuple[int, int], bool]:
    """In a child process: render in `job`; (RGB bytes, size, whether job.fmt is left)."""
    os.makedirs(job)
    os.chdir(job)
    image = render_latex(code, OPTIONS, 120.0, tex_format).convert("RGB")
    return image.tobytes(), image.size, os.path.isfile(FORMAT_FILE)


def test_a_format_the_body_overwrote_is_not_kept(tex, tmp_path):
    body = "\\newwrite\\f\\immediate\\openout\\f=job.fmt\\immediate\\write\\f{forged}\\immediate\\closeout\\f\n"
    code = FIGURE.replace("\\begin{tikzpicture}", body + "\\begin{tikzpicture}")
    image, job = tex("build", code, "build")
    assert image.size[0] > 10  # writing a file in its own directory is allowed; the figure renders
    assert not (job / FORMAT_FILE).exists()  # but the worker must not collect what the body wrote


def test_corpus_figures_draw_the_same_from_their_formats(corpora, tmp_path):
    require_tool("pdflatex", "pdftoppm", "pdfinfo")
    figures = sorted((corpora / "tikz").glob("*.tex"))
    assert len(figures) >= 15
    for figure in figures:
        assert preamble_key(make_document(figure.read_text())) is not None, figure.name
    jobs = [(str(tmp_path / f"{f.stem}-{mode}"), f.read_text(), mode) for f in figures for mode in ("plain", "build")]
    context = multiprocessing.get_context("fork")  # each child has its own working directory
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        done = list(pool.map(_compile_in, *zip(*jobs)))
    different = [
        figure.name
        for figure, plain, built in zip(figures, done[0::2], done[1::2])
        if not built[2] or built[:2] != plain[:2]  # the format was kept, and the pixels match
    ]
    assert different == []


def test_a_light_worker_builds_once_then_loads_the_format(tmp_path):
    require_tool("pdflatex", "pdftoppm", "pdfinfo")
    worker = Worker("light", str(tmp_path / "worker"))
    worker.warm()
    modes, images = [], []
    try:
        for code in (FIGURE, FIGURE, OTHER, FIGURE):
            data = code.encode()
            job = {"language": "latex", "length": len(data), "timeout": 60, "options": OPTIONS.to_dict()}
            reply, body = worker.handle({"jobs": [job]}, data)
            header = reply["results"][0]
            assert header["ok"], header
            modes.append(header["tex_format"])
            images.append(frame_to_image(header, body, OPTIONS.max_pixels))
    finally:
        worker.close()
        shutil.rmtree(tmp_path / "worker", ignore_errors=True)
    assert modes == ["plain", "build", "cached", "cached"]
    assert len(worker.formats.formats) == 1
    assert same_pixels(images[0], images[1]) and same_pixels(images[0], images[3])
    assert not same_pixels(images[0], images[2])
