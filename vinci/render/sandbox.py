"""The sandbox that untrusted render jobs run in: two layers around every job.

Layer 1, the worker (started by the pool, see `worker_command`): a long-lived process that
has matplotlib or cairosvg imported (or Chromium started) before any job. Where bubblewrap
works it runs inside `bwrap` with the whole filesystem mounted read-only, a private tmpfs on
/tmp and /dev/shm (wiped after every job), and new network, PID, IPC and UTS namespaces:
there is no network but a private loopback, and the worker sees only its own processes.

Layer 2, the job (`jobs.run_jobs`): the worker forks a fresh process per job, so jobs never
share interpreter state. The job drops every capability (a job running as root cannot
remount the read-only filesystem) and gets rlimits (address space, CPU seconds, file size,
open files, processes, no core dumps), a cleaned environment, a fresh working directory
that is deleted afterwards, stdin from /dev/null, and stdout/stderr through a pipe that the
worker stops reading (EPIPE) past a cap. It runs in a session of its own, and the worker is
a child subreaper: when the job ends its session is killed, and orphans (reparented to the
worker even after `setsid`) are killed and reaped until none is left. Outside bwrap, where
the kernel permits, the job also gets new PID and network namespaces of its own.

It protects against: endless loops, memory bombs, fork-and-hide children, huge output,
writing outside the job directory, network access (bwrap or a network namespace), crashes
of the interpreter or the browser, and jobs reading state left by earlier jobs.

It does NOT protect against: kernel exploits or namespace escapes (this is not a VM);
reading world-readable files (the filesystem is visible, read-only); fork bombs when running
as root (the kernel ignores RLIMIT_NPROC for root; the sweep kills them at the deadline);
CPU contention between jobs; a job signalling its own worker (it is then replaced). HTML
runs in a warm Chromium isolated by Chromium itself and layer 1, with a memory cap per
Chromium process (RLIMIT_DATA and V8's heap limit; an address-space cap would break V8).
Without bwrap and without namespace privileges it degrades to rlimits + sessions + subreaper
sweeping: jobs can then write wherever the user can and reach the network. The pool logs
which mode it got once at start-up.
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
import subprocess
import sys
import time
from typing import Optional

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
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

BWRAP_ARGS = (
    "--ro-bind", "/", "/",
    "--dev", "/dev",
    "--proc", "/proc",
    "--tmpfs", "/tmp",
    "--tmpfs", "/dev/shm",
    "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
    "--die-with-parent", "--new-session",
)  # fmt: skip


def import_paths() -> list[Path]:
    """Where a worker imports from besides its interpreter's own: this repository (for
    `vinci`), then every existing directory on the caller's PYTHONPATH, so a package the caller
    can import (installed with `pip --target`, say) renders in the worker too."""
    paths = [Path(__file__).resolve().parents[2]]
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        path = Path(entry).absolute() if entry else None
        if path is not None and path.is_dir() and path not in paths:
            paths.append(path)
    return paths


def tmp_rebinds() -> tuple[str, ...]:
    """Read-only binds for what the worker needs that the private /tmp would hide.

    A checkout, virtualenv or PYTHONPATH directory under /tmp (a CI clone, say) vanishes behind
    `--tmpfs /tmp`, and bwrap then cannot even start the interpreter. Binding them back
    read-only after the tmpfs keeps them usable and still unwritable.
    """
    needed = sorted({*import_paths(), Path(sys.prefix).resolve(), Path(sys.prefix)})
    tmp = Path("/tmp").resolve()
    keep = [p for p in needed if p.is_relative_to(tmp) or p.is_relative_to("/tmp")]
    keep = [p for p in keep if not any(p != q and p.is_relative_to(q) for q in keep)]  # outermost only
    return tuple(arg for p in keep for arg in ("--ro-bind", str(p), str(p)))


@functools.lru_cache(maxsize=1)
def bwrap_prefix() -> tuple[Optional[tuple[str, ...]], str]:
    """(bwrap argv prefix, description) if bubblewrap works here, else (None, why not)."""
    exe = shutil.which("bwrap")
    if exe is None:
        return None, "bubblewrap (bwrap) is not installed"
    args = (*BWRAP_ARGS, *tmp_rebinds())
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


@functools.lru_cache(maxsize=1)
def job_namespaces() -> int:
    """Namespace flags each job gets of its own (0: none).

    Inside bwrap the worker already has private PID and network namespaces, so a job is a
    single fork (cheap) and its tree is killed by session + subreaper sweep. Outside bwrap,
    where the kernel permits, each job gets new PID and network namespaces (one extra fork):
    the job is PID 1 there, so its whole tree dies with it, and it has no network at all.
    """
    if os.environ.get("VINCI_RENDER_BWRAP") == "1":
        return 0
    for flags in (CLONE_NEWPID | CLONE_NEWNET, CLONE_NEWPID):
        pid = os.fork()
        if pid == 0:
            try:
                unshare(flags)
                os._exit(0)
            except OSError:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) == 0:
            return flags
    return 0


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
