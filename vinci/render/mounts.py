"""Mount namespaces for the sandbox: the worker's private mounts and each job's own view.

The worker calls `confine_worker` once at start. It enters a mount namespace of its own (and,
when it is not root, a user namespace that maps only its own uid, which is what lets an
unprivileged worker mount anything), then makes itself non-dumpable, so a process of the same
user can neither ptrace it nor open its `/proc/<pid>/{mem,fd,environ}`.

Per job, the worker mounts a fresh tmpfs of `SandboxLimits.scratch_mb` on the job's directory
(`mount_scratch`) and detaches it after the job (`unmount_scratch`): every job starts from an
empty scratch space, its bytes are capped in total (a write past the cap is ENOSPC), and they
are gone the moment the job ends. The job process, PID 1 of new PID, mount, network and IPC
namespaces, then calls `confine_job`: a fresh /proc that shows only its own processes, every
other mount read-only, and its scratch tmpfs bound over /tmp, /var/tmp and /dev/shm, so there
is nowhere else to write (not the worker's own directory either).

Where the kernel refuses (no user namespaces for an unprivileged user), `confine_worker`
reports why; the worker then says so loudly, and jobs run with the weaker guarantees the
`sandbox` docstring lists.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from typing import Optional

from vinci.render.sandbox import CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, _libc, _prctl, unshare

CLONE_NEWUSER = 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_DUMPABLE = 4
JOB_NAMESPACES = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC
JOB_TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # where a job may write: all its scratch tmpfs
# mount options a read-only remount must keep: the kernel refuses to change locked ones
_FLAG_OPTIONS = {
    "ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
    "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21, "strictatime": 1 << 24,
}  # fmt: skip


def mount(source: Optional[str], target: str, fstype: Optional[str], flags: int, data: Optional[str] = None) -> None:
    encode = lambda text: None if text is None else text.encode()  # noqa: E731
    if _libc.mount(encode(source), target.encode(), encode(fstype), ctypes.c_ulong(flags), encode(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def make_undumpable() -> None:
    """No same-uid ptrace, no /proc/<pid>/mem, fd or environ for anyone but root."""
    _prctl(PR_SET_DUMPABLE, 0)


def confine_worker() -> Optional[str]:
    """Give this worker private mounts (see module docstring); None, or why it could not."""
    try:
        if os.geteuid() == 0:
            unshare(CLONE_NEWNS)
        else:
            uid, gid = os.geteuid(), os.getegid()
            unshare(CLONE_NEWUSER | CLONE_NEWNS)
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
                with open(f"/proc/self/{name}", "w") as handle:
                    handle.write(text)
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        why = None
    except OSError as error:
        why = f"no private mounts ({error.strerror or error})"
    make_undumpable()  # after the uid map: a non-dumpable process may not write its own
    return why


def enter_view(paths: list[str], keep: str, tmp_mb: int) -> None:
    """Outside bubblewrap, after `confine_worker`: chroot into a tmpfs that holds read-only
    binds of `paths` only (what bubblewrap's binds give a worker), the host's /dev and /proc,
    a fresh /tmp and /dev/shm of `tmp_mb` MiB each, and `keep` (the worker's own directory)
    writable at its own path. Raises OSError; the worker then stays in the host's view."""
    new = tempfile.mkdtemp(prefix="view-", dir=keep)  # removed with `keep` by the pool
    mount("vinci-view", new, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    for path in ("/tmp", "/dev/shm"):  # first: a checkout bound below /tmp stays visible
        os.makedirs(new + path, mode=0o755, exist_ok=True)
        mount("vinci-tmp", new + path, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={tmp_mb}m")
    for path in paths:
        target = new + path
        if os.path.islink(path) and os.path.dirname(path) == "/":
            os.symlink(os.readlink(path), target)  # /bin -> usr/bin stays a symlink
            continue
        os.makedirs(target, mode=0o755, exist_ok=True)
        mount(path, target, None, MS_BIND | MS_REC)
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    for path in ("/dev", "/proc"):
        os.makedirs(new + path, mode=0o755, exist_ok=True)
        mount(path, new + path, None, MS_BIND | MS_REC)
    mount("vinci-tmp", new + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={tmp_mb}m")  # over /dev's
    os.makedirs(new + keep, mode=0o700, exist_ok=True)
    mount(keep, new + keep, None, MS_BIND)
    os.chroot(new)
    os.chdir("/")


def mount_scratch(path: str, size_mb: int, uid: int, gid: int) -> None:
    """A fresh tmpfs of `size_mb` MiB on `path`, owned by the job's uid, for one job."""
    options = f"size={size_mb}m,nr_inodes=65536,mode=0700,uid={uid},gid={gid}"
    mount("vinci-scratch", path, "tmpfs", MS_NOSUID | MS_NODEV, options)


def unmount_scratch(path: str) -> None:
    """Detach a job's tmpfs: its memory is freed once no process of the job holds it."""
    if _libc.umount2(path.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {path}: {os.strerror(err)}")


def _mounts() -> list[tuple[str, int]]:
    """(mount point, flags to keep on remount) of every mount this process sees."""
    found = []
    with open("/proc/self/mountinfo") as table:
        for line in table:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")  # octal escapes such as \040
            flags = sum(_FLAG_OPTIONS.get(option, 0) for option in fields[5].split(","))
            found.append((point, flags))
    return found


def confine_job(scratch: str) -> None:
    """Inside a job's fresh namespaces, as its PID 1: see the module docstring. Raises OSError."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    table = _mounts()
    for point, flags in table:
        if point == scratch or point == "/proc" or point.startswith("/proc/") or flags & MS_RDONLY:
            continue
        try:
            mount(None, point, None, MS_BIND | MS_REMOUNT | MS_RDONLY | flags)
        except OSError as error:
            if error.errno not in (2, 13):  # gone already, or overmounted and unreachable
                raise
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    jobs_root = os.path.dirname(scratch)
    under_tmp = [
        p for p, flags in table
        if p.startswith(("/tmp/", "/dev/shm/")) and flags & MS_RDONLY and not p.startswith(jobs_root + "/")
    ]  # fmt: skip
    held = {p: os.open(p, os.O_PATH) for p in under_tmp if os.path.isdir(p)}  # read-only binds (a checkout)
    for target in sorted(JOB_TMP_DIRS, key=lambda t: t == "/tmp"):  # /tmp last: it hides `scratch`
        if os.path.isdir(target):
            mount(scratch, target, None, MS_BIND)
    for path, fd in held.items():  # put them back above the scratch, read-only as before
        os.makedirs(path, exist_ok=True)
        mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        os.close(fd)
    os.chdir("/tmp")


def probe_job_namespaces(root: str) -> tuple[int, Optional[str]]:
    """(JOB_NAMESPACES, None) when a job can get them and `confine_job` works in them (tried
    once in a throwaway process, with a scratch tmpfs under `root`), else (0, why not)."""
    read_end, write_end = os.pipe()
    scratch = tempfile.mkdtemp(prefix="probe-", dir=root)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            unshare(JOB_NAMESPACES)
            mount_scratch(scratch, 1, os.geteuid(), os.getegid())
            child = os.fork()
            if child == 0:
                try:
                    confine_job(scratch)
                    os._exit(0)
                except BaseException as error:
                    os.write(write_end, str(error).encode()[:300])
                    os._exit(1)
            _, status = os.waitpid(child, 0)
            code = os.waitstatus_to_exitcode(status)
        except BaseException as error:
            os.write(write_end, str(error).encode()[:300])
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        why = reader.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    os.rmdir(scratch)
    if os.waitstatus_to_exitcode(status) == 0:
        return JOB_NAMESPACES, None
    return 0, why or "the job namespaces could not be set up"
