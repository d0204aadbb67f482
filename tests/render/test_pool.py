"""RenderPool behaviour: ordering, futures, concurrency, laziness, worker replacement."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from tests.conftest import require_tool
from tests.render.conftest import TINY_CHART, stray_processes
from vinci.render import RenderJob, RenderPool, SandboxLimits


def chart(width: int, height: int) -> str:
    return f"import matplotlib.pyplot as plt\nplt.figure(figsize=({width}, {height}))\nplt.plot([0, 1])\n"


def svg(width: int) -> str:
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="5"></svg>'


def descendants(pool: RenderPool) -> list[psutil.Process]:
    found = []
    for pid in pool.worker_pids():
        proc = psutil.Process(pid)
        found += [proc, *proc.children(recursive=True)]
    return found


def test_results_come_back_in_order_across_languages(pool):
    jobs = [RenderJob("python", chart(w, 1)) if w % 2 else RenderJob("svg", svg(w)) for w in range(1, 9)]
    results = pool.render_many(jobs)
    assert [r.image.width for r in results] == [100 * w if w % 2 else w for w in range(1, 9)]
    assert [r.language for r in results] == [j.language for j in jobs]


def test_submit_returns_a_future_of_ordered_results(pool):
    future = pool.submit([RenderJob("svg", svg(w)) for w in (3, 7, 5)])
    assert [r.image.width for r in future.result(timeout=60)] == [3, 7, 5]


def test_jobs_run_concurrently(pool):
    sleepy = "import time\ntime.sleep(1.0)\n" + TINY_CHART
    started = time.monotonic()
    results = pool.render_many([RenderJob("python", sleepy) for _ in range(4)])
    wall = time.monotonic() - started
    assert all(r.ok for r in results)
    # a ratio, not an absolute time, so a loaded machine slows both sides alike:
    # two workers overlap the four 1 s jobs (wall ~ half their summed time); one at a time cannot.
    busy = sum(r.seconds for r in results)
    assert busy >= 4.0
    assert wall < 0.8 * busy, (wall, busy)


def test_unknown_language_raises_before_any_work(pool):
    with pytest.raises(ValueError, match="unknown language"):
        pool.render_many([RenderJob("python", TINY_CHART), RenderJob("brainfuck", "+")])


def test_python_only_pool_never_starts_chromium_and_close_stops_everything():
    require_tool("chromium", "chromedriver")
    fresh = RenderPool(workers=1)
    assert fresh.render("python", TINY_CHART).ok
    names = {p.name() for p in descendants(fresh)}
    assert not any(n.startswith(("chromium", "chrome")) for n in names)
    assert fresh.render("html", "<p>now</p>").ok
    procs = descendants(fresh)
    assert any(p.name().startswith(("chromium", "chrome")) for p in procs)
    fresh.close()
    assert fresh.worker_pids() == []
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in procs)
    with pytest.raises(RuntimeError, match="closed"):
        fresh.render("svg", svg(4))


@pytest.fixture(scope="module")
def disposable():
    """A one-worker pool whose workers these tests kill and wedge on purpose."""
    with RenderPool(workers=1, limits=SandboxLimits(grace_s=1.0)) as fresh:
        yield fresh


def test_killed_worker_is_replaced(disposable):
    assert disposable.render("python", TINY_CHART).ok
    (launcher,) = disposable.worker_pids()
    tree = [psutil.Process(launcher), *psutil.Process(launcher).children(recursive=True)]
    workers = [p for p in tree if "vinci.render.worker" in " ".join(p.cmdline())]
    os.kill(workers[-1].pid, signal.SIGKILL)
    first = disposable.render("python", TINY_CHART)
    second = disposable.render("python", TINY_CHART)
    assert (first.ok or first.kind == "crash") and second.ok
    assert disposable.worker_pids() != [launcher]


def test_hung_worker_is_killed_at_the_deadline_and_replaced(disposable):
    assert disposable.render("python", TINY_CHART).ok
    (launcher,) = disposable.worker_pids()
    for proc in [psutil.Process(launcher), *psutil.Process(launcher).children(recursive=True)]:
        proc.suspend()  # the worker stops answering, like a wedged process
    started = time.monotonic()
    hung = disposable.render("python", TINY_CHART, timeout=1.0)
    assert hung.kind == "timeout" and time.monotonic() - started < 4
    assert not psutil.pid_exists(launcher) or psutil.Process(launcher).status() == psutil.STATUS_ZOMBIE
    assert disposable.render("python", TINY_CHART).ok
    assert stray_processes(disposable) == []


def test_workers_import_what_the_callers_pythonpath_holds(tmp_path, monkeypatch):
    """A package on the caller's PYTHONPATH, even under the private /tmp of bubblewrap."""
    from vinci.render import sandbox

    (tmp_path / "vinci_path_probe.py").write_text("COLOUR = 'red'\n")
    tmp_path.chmod(0o755)  # a root worker's jobs run as nobody: what they import must be world-readable
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    sandbox.bwrap_prefix.cache_clear()  # its binds were computed without this path
    try:
        with RenderPool(workers=1) as fresh:
            chart = "import vinci_path_probe\nimport matplotlib.pyplot as plt\nplt.bar([0], [1], color=vinci_path_probe.COLOUR)\n"
            result = fresh.render("python", chart)
    finally:
        sandbox.bwrap_prefix.cache_clear()
    assert result.ok, result.error
    width, height = result.image.size
    red, green, blue = result.image.getpixel((width // 2, height // 2))  # inside the bar
    assert red > 200 and green < 80 and blue < 80
