"""The sandbox that untrusted render jobs run in: two layers around every job.

Layer 1, the worker (started by the pool, see `worker_command`): a long-lived process that
has matplotlib or cairosvg imported (or Chromium started) before any job. Where bubblewrap
works it runs inside `bwrap` with new network, PID, IPC and UTS namespaces and a filesystem
of read-only binds of `visible_paths` only: the system directories (libraries, TeX, fonts,
Chromium), the interpreter and its packages, the `vinci` package and the caller's PYTHONPATH,
never the user's home, the rest of the repository or the data; /tmp and /dev/shm are private
tmpfs. Without bubblewrap the worker builds the same view itself (`mounts.enter_view`) where
it may have a mount namespace. Either way it is not dumpable (`mounts.confine_worker`).

Layer 2, the job (`jobs.run_jobs`): the worker forks a fresh process per job, so jobs never
share interpreter state. The job is PID 1 of new PID, mount, network and IPC namespaces with a
/proc of its own (it sees only its own processes, and no other process's environ), every mount
read-only except one fresh tmpfs of `SandboxLimits.scratch_mb` that is its directory, /tmp,
/var/tmp and /dev/shm at once and is detached after the job (`mounts`). A root worker's job
then switches to the overflow uid (`JOB_UID`), so it can read only world-readable files. The
job drops every capability and gets rlimits (address space, CPU seconds, file size, open
files, processes, no core dumps), a cleaned environment, stdin from /dev/null, and
stdout/stderr through a pipe that the worker stops reading (EPIPE) past a cap. It runs in a
session of its own, and the worker is a child subreaper: when the job ends its namespace and
session are killed, and orphans are killed and reaped until none is left.

It protects against: endless loops, memory bombs, fork-and-hide children, huge output,
writing anywhere but the job's own capped scratch, leftovers between jobs, reading the user's
files or other processes' environment, forging the worker's reply (a request's nonce must come
back, see `handle`), network access, crashes of the interpreter or the browser.

It does NOT protect against: kernel exploits or namespace escapes (this is not a VM); reading
world-readable system files (/etc, /usr); CPU contention between jobs; a job signalling
its own process tree. HTML runs in a warm Chromium isolated by Chromium itself and layer 1
(a fresh tab per job, file-origin storage and cookies cleared after it, see `html`), with a
memory cap per Chromium process (RLIMIT_DATA and V8's heap limit). Where the kernel allows no
user namespaces to an unprivileged user, there are no job namespaces, no scratch tmpfs and no
private view: jobs then see every process and file of the user, and the worker logs that
loudly (a warning naming what is missing) at start.
"""

from __future__ import annotations

import ctypes
import errno
import functools
from pathlib import Path
import logging
import os
import shutil
import signal
import site
import subprocess
import sys
from sys import path as search_path  # the interpreter's import search path (read, never changed)
import time
from typing import Optional

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def become_subreaper() -> None:
    """Orphaned descendants get reparented to this process instead of init."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent() -> None:
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """Give up every capability for good (bounding set, ambient, effective/permitted), and
    forbid regaining any through exec. A job running as root can then not remount the
    read-only filesystem, ptrace, or load anything privileged."""
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == errno.EINVAL:
            break  # past the last capability this kernel knows
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")
    _prctl(PR_SET_NO_NEW_PRIVS, 1)


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")


# ---------------------------------------------------------------- worker layer (bubblewrap)

SYSTEM_PATHS = (
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
    "/var/lib/texmf", "/var/cache/fontconfig", "/var/cache/fonts",
)  # interpreter libraries, TeX, fonts, Chromium: readable, never writable
TOOLS = ("chromium", "chromium-browser", "chromedriver", "pdflatex", "pdftoppm", "pdfinfo", "kpsewhich")
WORKER_TMP_MB = 1024  # the worker's own /tmp and /dev/shm (browser profile, pages); jobs get their own
BWRAP_ARGS = (
    "--dev", "/dev",
    "--proc", "/proc",
    "--size", str(WORKER_TMP_MB << 20), "--tmpfs", "/tmp",
    "--size", str(WORKER_TMP_MB << 20), "--tmpfs", "/dev/shm",
    "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
    "--die-with-parent", "--new-session",
)  # fmt: skip
JOB_UID = 65534  # the overflow uid ("nobody"): what a job of a root worker runs as, owning nothing
BROWSER_UID = 65533  # a root worker's Chromium: another uid, so its threads never use up the jobs' RLIMIT_NPROC


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def import_paths() -> list[Path]:
    """Where a worker imports from besides its interpreter's own: this repository (for
    `vinci`), then every existing directory on the caller's PYTHONPATH, so a package the caller
    can import (installed with `pip --target`, say) renders in the worker too."""
    paths = [repo_root()]
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        path = Path(entry).absolute() if entry else None
        if path is not None and path.is_dir() and path not in paths:
            paths.append(path)
    return paths


def visible_paths() -> list[Path]:
    """Everything a worker (and so a job) can see besides its private /tmp, /dev and /proc:
    the system directories, the interpreter and its packages, the `vinci` package (not the
    rest of the repository), the caller's PYTHONPATH directories, the matplotlib font cache and
    the render tools. Not the user's home, the repository's other files or the data."""
    repo = repo_root()
    wanted = [Path(p) for p in SYSTEM_PATHS]
    wanted += [Path(p) for p in {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}]
    wanted += [Path(p) for p in (*site.getsitepackages(), site.getusersitepackages())]
    wanted.append(repo / "vinci")
    own = [repo, *(Path(p) for p in ("/tmp", "/dev", "/proc"))]  # never hidden behind a bind
    for path in [*import_paths()[1:], *(Path(p) for p in search_path[1:] if p)]:  # [0]: the script's own
        path = path.absolute()
        if not any(path == o or o.is_relative_to(path) for o in own) and not path.is_relative_to(repo):
            wanted.append(path)  # a directory that holds the repository would expose all of it
    for tool in TOOLS:
        exe = shutil.which(tool)
        if exe:
            wanted.append(Path(exe).resolve().parent)
    cache = matplotlib_cache()
    if cache:
        wanted.append(Path(cache))
    found = []
    for path in wanted:
        for variant in (path, path.resolve()):
            if variant.exists() and variant not in found and variant != Path("/"):
                found.append(variant)
    return sorted(found)


def matplotlib_cache() -> Optional[str]:
    """The caller's matplotlib font cache directory, which a worker seeds its own from."""
    home = os.environ.get("HOME", "/")
    return os.environ.get("MPLCONFIGDIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"), "matplotlib"
    )


def outermost(paths: list[Path]) -> list[Path]:
    """`paths` without those inside another one (a symlink does not count as a container)."""
    return [p for p in paths if not any(p != o and p.is_relative_to(o) and not o.is_symlink() for o in paths)]


def bind_args() -> tuple[str, ...]:
    """bwrap arguments that make `visible_paths` visible read-only (outermost paths only;
    a top-level symlink such as /bin -> usr/bin stays a symlink)."""
    paths = visible_paths()
    args: list[str] = []
    made: set[Path] = set()
    for path in outermost(paths):
        for parent in reversed(path.parents[:-1]):  # traversable by a job of any uid (bwrap's own are 0700)
            if parent not in made and parent not in (Path("/tmp"), Path("/dev")):
                made.add(parent)
                args += ["--perms", "0755", "--dir", str(parent)]
        if path.is_symlink() and path.parent == Path("/"):
            args += ["--symlink", os.readlink(path), str(path)]
        else:
            args += ["--ro-bind", str(path), str(path)]
    return tuple(args)


@functools.lru_cache(maxsize=1)
def bwrap_prefix() -> tuple[Optional[tuple[str, ...]], str]:
    """(bwrap argv prefix, description) if bubblewrap works here, else (None, why not)."""
    exe = shutil.which("bwrap")
    if exe is None:
        return None, "bubblewrap (bwrap) is not installed"
    args = (*BWRAP_ARGS, *bind_args())
    candidates = [(exe, *args)]
    if os.geteuid() != 0:  # unprivileged bwrap needs a user namespace
        candidates = [(exe, *args, "--unshare-user")]
    why = ""
    for prefix in candidates:
        try:
            probe = subprocess.run(
                [*prefix, "--", sys.executable, "-c", "pass"],
                capture_output=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            why = str(error)
            continue
        if probe.returncode == 0:
            return tuple(prefix), "bubblewrap"
        why = probe.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["failed"]
        why = why[0]
    return None, f"bubblewrap does not work here ({why})"


def worker_command(module_args: list[str], use_bwrap: bool) -> tuple[list[str], str]:
    """argv that starts a worker, and a description of its isolation."""
    base = [sys.executable, "-m", "vinci.render.worker", *module_args]
    if not use_bwrap:
        return base, "no bubblewrap (disabled)"
    prefix, why = bwrap_prefix()
    if prefix is None:
        return base, why
    return [*prefix, "--chdir", "/tmp", "--", *base], why


def reap_zombies(keep: tuple[int, ...] = ()) -> None:
    """Reap exited children (e.g. orphans reparented to this subreaper), except `keep`."""
    for pid in children_of(os.getpid(), zombies=True):
        if pid not in keep:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue


def children_of(parent: int, zombies: bool = False) -> list[int]:
    """Processes whose parent is `parent` (scans /proc): live ones, or only zombies."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent and (fields[0] == b"Z") == zombies:
            found.append(int(name))
    return found


def reap_orphans(deadline_s: float = 5.0) -> int:
    """Kill and reap every child of this process; return how many survived the deadline."""
    me, give_up = os.getpid(), time.monotonic() + deadline_s
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return 0
        if pid:
            continue
        alive = children_of(me)
        for child in alive:
            for kill in (os.killpg, os.kill):
                try:
                    kill(child, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    continue
        if time.monotonic() > give_up:
            log.warning("%d child processes survived SIGKILL", len(alive))
            return len(alive)
        time.sleep(0.001)
