"""SVG rendering with cairosvg, and its hostile inputs."""

from __future__ import annotations

import base64
import io
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.render.conftest import assert_clean_and_serving
from vinci.render import RenderJob, RenderOptions

SQUARE = '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20" viewBox="0 0 40 20">{}</svg>'


def red_pixels(image) -> int:
    pixels = np.asarray(image).astype(int)
    return int(((pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)).sum())


def test_renders_on_white_at_document_size(pool):
    result = pool.render("svg", SQUARE.format('<rect x="0" y="0" width="10" height="10" fill="red"/>'))
    assert result.ok and result.image.mode == "RGB" and result.image.size == (40, 20)
    assert result.image.getpixel((30, 15)) == (255, 255, 255)  # transparent background -> white
    assert result.image.getpixel((5, 5)) == (255, 0, 0)


def test_output_size_keeps_aspect_or_is_forced(pool):
    code = SQUARE.format('<circle cx="20" cy="10" r="8"/>')
    wide, square = pool.render_many(
        [
            RenderJob("svg", code, options=RenderOptions(svg_width=336)),
            RenderJob("svg", code, options=RenderOptions(svg_width=336, svg_height=336)),
        ]
    )
    assert wide.image.size == (336, 168) and square.image.size == (336, 336)


def test_inline_data_images_still_work(pool):
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (255, 0, 0)).save(buffer, "PNG")
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    result = pool.render("svg", SQUARE.format(f'<image href="{uri}" width="40" height="20" preserveAspectRatio="none"/>'))
    assert result.ok and red_pixels(result.image) > 500  # most of the 800-pixel canvas


def test_billion_laughs_is_refused(pool):
    entities = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i else "&lol;" * 10}">' for i in range(10)
    )
    code = f'<?xml version="1.0"?><!DOCTYPE svg [{entities}]><svg xmlns="http://www.w3.org/2000/svg"><text>&lol9;</text></svg>'
    started = time.monotonic()
    result = pool.render("svg", code, timeout=3)
    assert time.monotonic() - started < 6
    assert not result.ok and result.kind == "syntax"
    assert_clean_and_serving(pool, "svg")


@pytest.fixture
def red_png_outside_tmp():
    """A red PNG the sandbox can see (its /tmp is private, so not under /tmp)."""
    folder = Path(tempfile.mkdtemp(prefix=".vinci-test-", dir=Path.home()))
    path = folder / "red.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(path)
    yield path
    shutil.rmtree(folder)


def test_external_file_image_is_not_resolved(pool, red_png_outside_tmp):
    image = f'<image href="file://{red_png_outside_tmp}" width="40" height="20" preserveAspectRatio="none"/>'
    plain = f'<image href="{red_png_outside_tmp}" width="40" height="20"/>'
    for code in (SQUARE.format(image), SQUARE.format(plain)):
        result = pool.render("svg", code)
        assert result.ok, result.error
        assert red_pixels(result.image) == 0  # a resolved image would cover the canvas in red
    assert_clean_and_serving(pool, "svg")


def test_external_http_image_reaches_no_listener(pool, listener):
    code = SQUARE.format(f'<image href="http://127.0.0.1:{listener.port}/x.png" width="40" height="20"/>')
    result = pool.render("svg", code)
    assert result.ok, result.error
    time.sleep(0.3)
    assert listener.connections == 0
    assert_clean_and_serving(pool, "svg")


def test_200000_pixel_canvas_fails_before_allocating(pool):
    code = '<svg xmlns="http://www.w3.org/2000/svg" width="200000" height="200000"><rect width="10" height="10"/></svg>'
    started = time.monotonic()
    result = pool.render("svg", code, timeout=3)
    assert time.monotonic() - started < 6
    assert not result.ok and result.kind == "limit" and "200000x200000" in result.error
    assert_clean_and_serving(pool, "svg")
