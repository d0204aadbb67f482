"""The renderer's hostile suites again, as an unprivileged user.

Run as root (CI), this runs tests/render/test_sandbox_hostile.py and test_python_hostile.py in
a nested pytest as the overflow uid (nobody, 65534): a job then shares its worker's uid, which
is where forging a reply and reading other processes' /proc used to work. The interpreter may
live in a directory that user cannot enter (pyenv under /root, mode 0700): the nested run gets
a private mount namespace in which a tmpfs covers that directory and binds only the interpreter
back, so nothing of root's home becomes readable. Run as a normal user, the suites above
already ran as that user, so there is nothing left to do here.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import require_tool

REPO = Path(__file__).resolve().parents[2]
SUITES = ("tests/render/test_sandbox_hostile.py", "tests/render/test_python_hostile.py")
UID = 65534


def _closed_ancestor(path: Path) -> Path | None:
    """The outermost directory above `path` that other users cannot enter, if any."""
    for parent in reversed(path.parents):
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return parent
    return None


def test_hostile_suites_pass_as_an_unprivileged_user():
    if os.geteuid() != 0:
        pytest.skip("already unprivileged: the hostile suites ran as this user")
    require_tool("setpriv", "unshare")
    home = Path(tempfile.mkdtemp(prefix="vinci-nobody-"))
    stage = Path(tempfile.mkdtemp(prefix="vinci-stage-"))
    os.chown(home, UID, UID)
    stage.chmod(0o755)
    prefix = Path(sys.base_prefix).resolve()
    closed = _closed_ancestor(prefix)
    script = ["mount --make-rprivate /"]
    if closed is not None:
        script += [
            f"mount --bind {shlex.quote(str(prefix))} {shlex.quote(str(stage))}",
            f"mount -t tmpfs -o mode=0755,size=1m vinci-cover {shlex.quote(str(closed))}",
            f"mkdir -p {shlex.quote(str(prefix))}",
            f"mount --bind {shlex.quote(str(stage))} {shlex.quote(str(prefix))}",
        ]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8", "CI": os.environ.get("CI", "")}
    inner = [
        "setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "env", "-i",
        *(f"{k}={v}" for k, v in env.items()), "PYTHONDONTWRITEBYTECODE=1",
        sys.executable, "-m", "pytest", *SUITES, "-q", "-p", "no:cacheprovider", "-x",
    ]  # fmt: skip
    script.append("exec " + shlex.join(inner))
    try:
        done = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", " && ".join(script)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        subprocess.run(["rm", "-rf", str(home)], check=False)
        stage.rmdir()
    tail = (done.stdout + done.stderr)[-4000:]
    assert done.returncode == 0, tail
    assert " passed" in done.stdout and "skipped" not in done.stdout, tail
