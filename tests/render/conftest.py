"""Fixtures for renderer tests: one shared warm pool, a loopback listener that counts
connections, and process-tree inspection to prove a job left nothing behind."""

from __future__ import annotations

import socket
import threading
import time

import psutil
import pytest

from vinci.render import RenderJob, RenderPool

# Processes that legitimately live under a pool: the sandbox launcher, the worker itself,
# and a warm browser.
INFRASTRUCTURE = ("bwrap", "chromedriver", "chromium", "chrome", "chrome_crashpad")

TINY_CHART = "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\n"


@pytest.fixture(scope="session")
def pool():
    """One warm pool for the whole render test session (2 workers of each kind)."""
    with RenderPool(workers=2, timeout=20.0) as shared:
        # wait for the python workers' warm-up here, so a test's timing covers only its own job
        shared.render_many([RenderJob("python", "import matplotlib.pyplot as plt\nplt.plot([1, 2])\n")] * 2)
        yield shared


def stray_processes(pool: RenderPool) -> list[psutil.Process]:
    """Descendants of the pool's workers that are not worker/browser infrastructure."""
    strays = []
    for pid in pool.worker_pids():
        try:
            tree = psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for proc in tree:
            try:
                name, cmdline = proc.name(), " ".join(proc.cmdline())
            except psutil.NoSuchProcess:
                continue
            if "vinci.render.worker" in cmdline or name.startswith(INFRASTRUCTURE):
                continue
            strays.append(proc)
    return strays


def zombies_below_me() -> list[psutil.Process]:
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def processes_matching(text: str) -> list[psutil.Process]:
    """Every process on the machine whose command line contains `text`."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if text in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def assert_clean_and_serving(pool: RenderPool, language: str = "python") -> None:
    """No stray process, no zombie, and the pool still renders the next job."""
    deadline = time.monotonic() + 2.0
    while (stray_processes(pool) or zombies_below_me()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stray_processes(pool) == []
    assert zombies_below_me() == []
    follow_up = {
        "python": TINY_CHART,
        "svg": '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>',
        "html": "<p>next</p>",
        "latex": r"\begin{tikzpicture}\draw (0,0) -- (1,1);\end{tikzpicture}",
    }[language]
    result = pool.render(language, follow_up, timeout=20)
    assert result.ok, result.error


class Listener:
    """A TCP server on 127.0.0.1 that records every connection it accepts."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()
