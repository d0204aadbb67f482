"""Hostile jobs against the sandbox itself: forging the worker's reply, leaving files behind,
filling RAM, reading the user's files or another process's environment, and HTML pages that
land elsewhere or read what an earlier page left. One hostile case per test. This file also
runs as an unprivileged user (see test_unprivileged.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import CORPORA, require_tool
from vinci.render import RenderJob, RenderPool, SandboxLimits
from vinci.render.pool import MAX_BATCH_BYTES, svg_batches
from vinci.render.protocol import encode

REPO = Path(__file__).resolve().parents[2]
SCRATCH_MB = 64
FORGED = encode({"results": [{"ok": True, "size": [8, 8]}]}, bytes(8 * 8 * 3))  # "an 8x8 image, ok"


def chart(width: int, height: int) -> str:
    return f"import matplotlib.pyplot as plt\nplt.figure(figsize=({width}, {height}))\nplt.plot([0, 1])\n"


@pytest.fixture(scope="module")
def solo():
    """One worker of each kind, so consecutive jobs share a worker (what a leftover needs)."""
    with RenderPool(workers=1, limits=SandboxLimits(scratch_mb=SCRATCH_MB, grace_s=5.0)) as fresh:
        yield fresh


@pytest.fixture(scope="module")
def bare():
    """The same without bubblewrap: the job layer alone must hold."""
    with RenderPool(workers=1, bubblewrap=False, limits=SandboxLimits(scratch_mb=SCRATCH_MB)) as fresh:
        yield fresh


@pytest.fixture(params=["bubblewrap", "no bubblewrap"])
def either(request):
    return request.getfixturevalue("solo" if request.param == "bubblewrap" else "bare")


def report(pool: RenderPool, body: str) -> dict:
    """Run `body` (which fills the dict `out`) as a job; the job fails on purpose to send `out` back."""
    code = "import json, os\nout = {}\n" + body + "\nraise RuntimeError('REPORT' + json.dumps(out))\n"
    result = pool.render("python", code, timeout=10)
    assert result.kind == "crash" and "REPORT" in result.error, result.error
    text = result.error.split("REPORT", 1)[1].rsplit(" (line", 1)[0]
    return json.loads(text)


FORGE = f"""
import json, os
out = {{}}
forged = {FORGED!r}
for pid in [p for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()]:
    try:
        cmdline = open(f'/proc/{{pid}}/cmdline', 'rb').read()
    except OSError:
        continue
    if b'vinci.render.worker' not in cmdline:
        continue
    out.setdefault('workers', []).append(pid)
    try:
        fds = os.listdir(f'/proc/{{pid}}/fd')
    except OSError as error:
        out.setdefault('refused', []).append(str(error))
        continue
    for fd in fds:
        try:
            flags = int(open(f'/proc/{{pid}}/fdinfo/{{fd}}').read().split('flags:')[1].split()[0], 8)
            if 'pipe' in os.readlink(f'/proc/{{pid}}/fd/{{fd}}') and flags & 3 == os.O_WRONLY:  # a reply pipe
                target = os.open(f'/proc/{{pid}}/fd/{{fd}}', os.O_WRONLY | os.O_NONBLOCK)
                os.write(target, forged)
                out.setdefault('forged', []).append(fd)
        except OSError as error:
            out.setdefault('refused', []).append(str(error))
"""


def test_a_job_that_forges_its_workers_reply_fails_alone(solo):
    hostile = FORGE + "\nimport sys\nsys.stderr.write(json.dumps(out))\n# draws nothing\n"
    jobs = [RenderJob("python", hostile), RenderJob("python", chart(3, 1)), RenderJob("python", chart(4, 1))]
    results = [solo.render_many([job])[0] for job in jobs]  # one after another, on the one worker
    forged, first, second = results
    assert not (forged.ok and forged.image.size == (8, 8)), "a job forged its own result"
    assert not forged.ok, forged.error
    assert first.ok and first.image.size == (300, 100), (first.error, first.image)
    assert second.ok and second.image.size == (400, 100), (second.error, second.image)


def test_a_reply_that_is_not_for_the_request_is_refused(solo):
    """Bytes some process slipped into the worker's reply pipe (here: this test) are never taken."""
    assert solo.render("python", chart(2, 1)).ok
    (handle,) = solo._handles["chart"]
    pipe = os.open(f"/proc/self/fd/{handle.proc.stdout.fileno()}", os.O_WRONLY)
    try:
        os.write(pipe, FORGED)  # the frame the hostile job above tries to write
    finally:
        os.close(pipe)
    stale = solo.render("python", chart(3, 1))
    assert not (stale.ok and stale.image.size == (8, 8))
    after = solo.render("python", chart(4, 1))
    assert after.ok and after.image.size == (400, 100)


def test_the_worker_is_not_dumpable(bare):
    """A process of the worker's own uid, without capabilities (what a job is when it can see
    its worker at all), may not open the worker's /proc/<pid>/environ (nor fd, nor mem)."""
    assert bare.render("python", chart(2, 1)).ok
    (handle,) = bare._handles["chart"]
    peek = (
        "import sys\nfrom vinci.render import sandbox\nsandbox.drop_capabilities()\n"
        f"sys.stdout.write(str(len(open('/proc/{handle.proc.pid}/environ', 'rb').read())))\n"
    )
    done = subprocess.run([sys.executable, "-c", peek], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode != 0 and "PermissionError" in done.stderr, (done.stdout, done.stderr[-300:])


LEAVE = """
for place in (os.getcwd(), '/tmp', '/var/tmp', '/dev/shm', '/', os.path.dirname(os.getcwd()), '/tmp/.vinci-worker',
              os.path.dirname(os.path.dirname(os.getcwd()))):
    try:
        with open(os.path.join(place, 'vinci-leftover'), 'w') as handle:
            handle.write('x')
        out.setdefault('wrote', []).append(place)
    except OSError:
        pass
"""
LOOK = """
for place in (os.getcwd(), '/tmp', '/var/tmp', '/dev/shm', '/', os.path.dirname(os.getcwd()), '/tmp/.vinci-worker',
              os.path.dirname(os.path.dirname(os.getcwd()))):
    try:
        if os.path.exists(os.path.join(place, 'vinci-leftover')):
            out.setdefault('found', []).append(place)
        if place in (os.getcwd(), '/tmp', '/dev/shm') and os.listdir(place):
            out.setdefault('not empty', []).append([place, os.listdir(place)[:5]])
    except OSError:
        pass
"""


def test_every_job_starts_from_an_empty_scratch(either):
    wrote = report(either, LEAVE)
    assert wrote.get("wrote"), "the job could write nowhere at all"
    seen = report(either, LOOK)
    # A checkout (or its venv) that lives under /tmp is bound read-only into the job's view, so
    # the scratch shows that bind's parent folder: a mount point, not something a job left.
    from vinci.render.sandbox import visible_paths

    skeleton = {p.relative_to("/tmp").parts[0] for p in map(Path, visible_paths()) if p.is_relative_to("/tmp") and p != Path("/tmp")}
    kept = [[place, [n for n in names if n not in skeleton]] for place, names in seen.pop("not empty", [])]
    if any(names for _, names in kept):
        seen["not empty"] = [entry for entry in kept if entry[1]]
    assert seen == {}, f"left by the job before: {seen} (it wrote to {wrote['wrote']})"


def shmem_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Shmem:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no Shmem in /proc/meminfo")


def test_scratch_bytes_are_capped_per_job_and_freed_after_it(solo):
    """A job may write SCRATCH_MB in all, in many files under the per-file limit, and what it
    wrote is freed when it ends, wherever it wrote it (the worker's own directory included)."""
    fill = (
        "import errno\nblock = b'x' * (4 << 20)\nwritten = 0\n"
        "for i, place in enumerate((os.getcwd(), '/dev/shm', os.path.dirname(os.path.dirname(os.getcwd())))):\n"
        "    for n in range(12):\n"
        "        try:\n"
        "            with open(os.path.join(place, f'fill-{i}-{n}'), 'wb') as handle:\n"
        "                handle.write(block)\n"
        "            written += 4\n"
        "        except OSError as error:\n"
        "            out['stopped'] = errno.errorcode.get(error.errno, str(error.errno))\n"
        "            break\n"
        "out['written_mb'] = written\n"
    )
    before = shmem_mb()
    outcome = report(solo, fill)
    assert outcome["written_mb"] <= SCRATCH_MB, outcome
    assert outcome.get("stopped") in ("ENOSPC", "EROFS", "EACCES"), outcome
    assert shmem_mb() - before < 24, "the job's files outlived it in RAM-backed tmpfs"


def test_a_jobs_proc_shows_only_its_own_processes(either):
    seen = report(either, "out['pids'] = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\nout['me'] = os.getpid()")
    assert seen["pids"] == [seen["me"]], seen


def test_no_other_process_environment_is_readable(either):
    probe = (
        "for pid in [p for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()]:\n"
        "    try:\n"
        "        if open(f'/proc/{pid}/environ', 'rb').read():\n"
        "            out.setdefault('read', []).append(pid)\n"
        "    except OSError:\n"
        "        pass\n"
    )
    assert report(either, probe) == {}


@pytest.fixture
def secrets_beside_the_repo():
    """0600 files of this user where the issue found them: beside the repo and in the home."""
    token = uuid.uuid4().hex
    made = []
    for folder in (REPO, Path.home()):
        path = folder / f".env-vinci-hostile-{token}"
        try:
            path.write_text(f"SECRET_TOKEN={token}\n")
        except OSError:
            continue
        path.chmod(0o600)
        made.append(path)
    assert made, "could create no secret file to read"
    yield made
    for path in made:
        path.unlink()


def test_jobs_read_no_user_files_repo_files_or_data(either, secrets_beside_the_repo):
    others = [REPO / "tests" / "render" / "conftest.py", REPO / "README.md"]
    data = sorted(CORPORA.rglob("*.svg"))[:1] if CORPORA.is_dir() else []
    paths = [str(p) for p in (*secrets_beside_the_repo, *others, *data)]
    probe = (
        f"for path in {paths!r}:\n"
        "    try:\n"
        "        text = open(path).read(40)\n"
        "        out.setdefault('read', []).append([path, text])\n"
        "    except OSError:\n"
        "        pass\n"
    )
    assert report(either, probe) == {}


def test_svg_batches_split_by_bytes_under_the_frame_cap(solo):
    """128 SVGs of 1.1 MB: one worker would get 64 per request (70 MB) without the byte split."""
    padding = "<!--" + "x" * 1_100_000 + "-->"
    code = '<svg xmlns="http://www.w3.org/2000/svg" width="3" height="2">' + padding + "</svg>"
    results = solo.render_many([RenderJob("svg", code)] * 128)
    assert [r.error for r in results if not r.ok] == []
    assert all(r.image.size == (3, 2) for r in results)
    sizes = [len(code)] * 128
    assert all(sum(sizes[i] for i in batch) <= MAX_BATCH_BYTES for batch in svg_batches(list(range(128)), sizes, 64))


# ------------------------------------------------------------------------------------------ html


def is_red(rgb) -> bool:
    return rgb[0] > 200 and rgb[1] < 60 and rgb[2] < 60


def test_a_page_larger_than_a_data_url_renders_itself(solo):
    require_tool("chromium", "chromedriver")
    page = "<body style='margin:0;background:#ff0000'><!--" + "x" * 3_000_000 + "--></body>"
    result = solo.render("html", page, timeout=20)
    assert result.ok, result.error
    assert is_red(result.image.getpixel((10, 10))), "rendered some other page"


@pytest.mark.parametrize(
    "page",
    ["<script>location.replace('about:blank')</script>", "<meta http-equiv=refresh content='0;url=about:blank'>"],
)
def test_a_render_that_ends_on_another_page_fails_by_name(solo, page):
    require_tool("chromium", "chromedriver")
    result = solo.render("html", page + "<p>x</p>", timeout=10)
    assert not result.ok and "WrongPage" in result.error, result.error
    assert solo.render("html", "<p>next</p>").ok


def test_no_window_name_history_or_storage_reaches_the_next_page(solo):
    require_tool("chromium", "chromedriver")
    writer = (
        "<script>window.name = 'leak'; history.pushState({}, '', '#one'); history.pushState({}, '', '#two');"
        "localStorage.setItem('k', 'v'); sessionStorage.setItem('k', 'v'); document.cookie = 'k=v';</script>"
    )
    reader = (
        "<body style='margin:0'><script>let seen = window.name !== '' || history.length > 2"
        " || localStorage.getItem('k') !== null || sessionStorage.getItem('k') !== null || document.cookie !== '';"
        "document.body.style.background = seen ? '#ff0000' : '#00ff00';</script></body>"
    )
    for code in (writer, reader, writer):
        assert solo.render("html", code).ok
    result = solo.render("html", reader)
    assert result.ok, result.error
    assert result.image.getpixel((10, 10)) == (0, 255, 0), "the page saw what an earlier page left"


def test_browser_restarts_leave_no_file_descriptors(tmp_path):
    """The worker kills and restarts Chromium after a hung page; each restart must close the
    WebDriver connection and chromedriver's pipes."""
    require_tool("chromium", "chromedriver")
    from vinci.render.html import Browser
    from vinci.render.options import RenderOptions

    browser = Browser(root=str(tmp_path))

    def restart() -> None:
        browser.start(RenderOptions())
        browser.render("<p>x</p>", RenderOptions(), 10.0)
        browser.kill()

    restart()  # imports and first-use caches
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(4):
        restart()
    assert len(os.listdir("/proc/self/fd")) - before <= 1
