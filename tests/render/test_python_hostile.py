"""Hostile Python programs: each returns within its timeout plus a margin with a clear
error (or a legitimate image), leaves no process behind, writes nothing outside its temp
dir, reaches no network, and the pool serves the next job."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from tests.conftest import require_tool
from tests.render.conftest import TINY_CHART, assert_clean_and_serving, processes_matching

MARGIN = 3.0  # seconds beyond the job timeout that a hostile job may take end to end
REPO = Path(__file__).resolve().parents[2]


def run(pool, code, timeout=3.0):
    started = time.monotonic()
    result = pool.render("python", code, timeout=timeout)
    assert time.monotonic() - started < timeout + MARGIN
    return result


def test_infinite_loop_times_out(pool):
    result = run(pool, "while True:\n    pass\n", timeout=2.0)
    assert result.kind == "timeout" and "2s" in result.error
    assert_clean_and_serving(pool)


def test_40_gb_allocation_hits_the_memory_limit(pool):
    result = run(pool, "block = bytearray(40 * 2**30)\n")
    assert result.kind == "limit" and "memory" in result.error
    assert_clean_and_serving(pool)


def test_fifty_setsid_children_are_killed(pool):
    marker = f"{1000 + uuid.uuid4().int % 9000}.25"
    code = (
        "import os\n"
        "for _ in range(50):\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        f"        os.execv('/bin/sleep', ['sleep', '{marker}'])\n" + TINY_CHART
    )
    result = run(pool, code, timeout=5.0)
    assert result.ok, result.error  # the chart itself is fine; the children must not outlive it
    assert processes_matching(f"sleep {marker}") == []
    assert_clean_and_serving(pool)


def test_writes_to_tmp_and_repo_stay_inside_the_sandbox(pool):
    require_tool("bwrap")
    name = f"vinci-hostile-{uuid.uuid4().hex}"
    targets = [Path("/tmp") / name, REPO / name]
    code = (
        "errors = []\n"
        f"for path in {[str(t) for t in targets]!r}:\n"
        "    try:\n"
        "        open(path, 'w').write('owned')\n"
        "    except OSError as error:\n"
        "        errors.append(str(error))\n" + TINY_CHART
    )
    result = run(pool, code)
    assert result.ok, result.error
    assert [t for t in targets if t.exists()] == []
    assert_clean_and_serving(pool)


def test_socket_to_a_loopback_listener_gets_nowhere(pool, listener):
    require_tool("bwrap")
    code = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {listener.port}), timeout=1).sendall(b'hi')\n"
        "except OSError as error:\n"
        "    print(error)\n" + TINY_CHART
    )
    result = run(pool, code)
    assert result.ok, result.error
    time.sleep(0.3)
    assert listener.connections == 0
    assert_clean_and_serving(pool)


def test_segfault_via_ctypes_is_a_crash(pool):
    result = run(pool, "import ctypes\nctypes.string_at(0)\n")
    assert result.kind == "crash" and "SIGSEGV" in result.error
    assert_clean_and_serving(pool)


def test_sys_exit_without_a_figure_is_no_output(pool):
    result = run(pool, "import sys\nsys.exit(0)\n")
    assert result.kind == "no-output" and "no matplotlib figure" in result.error
    assert_clean_and_serving(pool)


def test_endless_stdout_hits_the_output_cap(pool):
    result = run(pool, "while True:\n    print('x' * 1000)\n")
    assert result.kind == "limit" and "output" in result.error
    assert_clean_and_serving(pool)


def test_200000_pixel_figure_fails_cleanly(pool):
    code = "import matplotlib.pyplot as plt\nplt.figure(figsize=(2000, 2))\nplt.plot([1, 2])\nplt.savefig('wide.png')"
    result = run(pool, code)
    assert result.kind == "limit" and "200000x200" in result.error
    assert_clean_and_serving(pool)


def test_limit_error_cannot_be_swallowed_by_the_program(pool):
    code = (
        "import matplotlib.pyplot as plt\nplt.figure(figsize=(2000, 2))\n"
        "try:\n    plt.savefig('wide.png')\nexcept Exception:\n    pass\n"
    )
    result = run(pool, code)
    assert result.kind == "limit"
    assert_clean_and_serving(pool)
