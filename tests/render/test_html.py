"""HTML rendering in warm headless Chromium, and its hostile inputs."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.conftest import require_tool
from tests.render.conftest import assert_clean_and_serving
from vinci.render import RenderJob, RenderOptions, RenderPool
from vinci.render.options import SandboxLimits

RED_BODY = "<body style='margin:0;background:#ff0000'></body>"


@pytest.fixture(autouse=True)
def _browser_installed():
    require_tool("chromium", "chromedriver")


def is_red(rgb) -> bool:
    return rgb[0] > 200 and rgb[1] < 60 and rgb[2] < 60


def test_renders_viewport_on_white(pool):
    result = pool.render("html", "<h1 style='color:#000'>Hello</h1>")
    assert result.ok and result.image.mode == "RGB" and result.image.size == (1280, 720)
    assert result.image.getpixel((1200, 700)) == (255, 255, 255)
    assert np.asarray(result.image).min() < 50  # the heading is drawn


def test_viewport_and_full_page_options(pool):
    tall = "<div style='height:3000px;background:#00f'></div>"
    options = RenderOptions(html_width=400, html_height=300, html_max_height=2000)
    viewport_only = RenderOptions(html_width=400, html_height=300, html_full_page=False)
    capped, clipped = pool.render_many([RenderJob("html", tall, options=options), RenderJob("html", tall, options=viewport_only)])
    assert capped.ok and capped.image.size == (400, 2000)
    assert clipped.ok and clipped.image.size == (400, 300)


def test_no_state_leaks_between_jobs(pool):
    writer = "<script>try { localStorage.setItem('k', 'v'); document.cookie = 'k=v'; } catch (e) {}</script>"
    reader = (
        "<body style='margin:0'><script>let seen = false;"
        "try { seen = localStorage.getItem('k') === 'v'; } catch (e) {}"
        "seen = seen || document.cookie.includes('k=v') || window.name === 'leak';"
        "window.name = 'leak';"
        "document.body.style.background = seen ? '#ff0000' : '#00ff00';</script></body>"
    )
    results = pool.render_many([RenderJob("html", writer), RenderJob("html", reader), RenderJob("html", reader)])
    assert all(r.ok for r in results)
    assert [is_red(r.image.getpixel((10, 10))) for r in results[1:]] == [False, False]


def test_endless_javascript_times_out_and_browser_recovers(pool):
    started = time.monotonic()
    result = pool.render("html", "<script>while (true) {}</script>", timeout=3)
    assert time.monotonic() - started < 3 + 8  # page-load timeout plus a browser restart
    assert not result.ok and result.kind == "timeout"
    assert_clean_and_serving(pool, "html")


GREEDY_PAGE = """<body style='margin:0'><script>
const kept = [];
let got = 0;
try { while (got < 6144) { kept.push(new ArrayBuffer(64 << 20)); got += 64; } } catch (e) {}
document.body.style.background = got >= 6144 ? "#00ff00" : "#ff0000";
</script></body>"""


def test_a_page_gets_no_more_memory_than_the_cap(pool):
    # 6 GiB of array buffers fit in this machine's memory but not under the 2 GiB cap:
    # the page sees failed allocations (red), and the browser keeps serving
    assert pool.limits.html_memory_mb == 2048
    result = pool.render("html", GREEDY_PAGE)
    assert result.ok, result.error
    assert is_red(result.image.getpixel((10, 10)))
    assert_clean_and_serving(pool, "html")


def test_a_pool_with_a_higher_cap_gives_the_page_its_memory():
    # the buffers are never written, so 6 GiB of them cost address space, not RAM
    with RenderPool(workers=1, limits=SandboxLimits(html_memory_mb=8192)) as roomy:
        result = roomy.render("html", GREEDY_PAGE)
    assert result.ok, result.error
    assert result.image.getpixel((10, 10)) == (0, 255, 0)


def test_fetch_and_img_to_a_loopback_listener_are_blocked(pool, listener):
    url = f"http://127.0.0.1:{listener.port}"
    code = (
        f"<img src='{url}/a.png'><link rel=stylesheet href='{url}/s.css'>"
        f"<script>fetch('{url}/f').catch(() => null); new Image().src = '{url}/b.png';"
        f"navigator.sendBeacon && navigator.sendBeacon('{url}/beacon');</script>{RED_BODY}"
    )
    result = pool.render("html", code, timeout=5)
    assert result.ok, result.error
    time.sleep(0.5)
    assert listener.connections == 0
    assert_clean_and_serving(pool, "html")


def test_2_000_000_pixel_tall_page_is_capped(pool):
    result = pool.render("html", "<div style='height:2000000px;background:#ff0000'></div>", timeout=5)
    assert result.ok, result.error
    assert result.image.size == (1280, RenderOptions().html_max_height)
    assert_clean_and_serving(pool, "html")


@pytest.mark.parametrize("call", ["alert('x')", "window.open('about:blank')", "print()", "confirm('x')"])
def test_dialogs_and_popups_cannot_hang_a_job(pool, call):
    code = f"<body style='margin:0'><script>{call}; document.body.style.background = '#ff0000';</script></body>"
    started = time.monotonic()
    result = pool.render("html", code, timeout=5)
    assert time.monotonic() - started < 5
    assert result.ok, result.error
    assert is_red(result.image.getpixel((10, 10)))  # the script ran on past the dialog
    assert_clean_and_serving(pool, "html")
