"""The job layer of the sandbox: run render jobs in fresh forked processes under limits.

`run_jobs` forks one job process from the warm worker. The process sets itself up (own
session; where `JobSandbox.namespaces` allows, PID 1 of fresh namespaces confined by
`mounts.confine_job`; the overflow uid under a root worker; no capabilities, rlimits, cleaned
environment, its scratch as working directory, fds 0-2 and a result pipe only) and runs its
jobs in order, sending one frame per job. The
worker enforces each job's wall-clock timeout, keeps at most `output_bytes` of
stdout/stderr (then closes the pipe, so further writes fail with EPIPE), and when the
process ends or overruns it kills the process's session and namespace and sweeps orphans
(see `sandbox`). If a job crashes or overruns the process, the jobs after it are run in a
fresh process, so one bad job only costs its own result.

A python or latex job always gets a process of its own. Only SVG documents are batched
several to a process: cairosvg runs no scripts, so one document cannot leave state that
changes how the next one renders, and batching amortises the fork over jobs that take
about a millisecond.
"""

from __future__ import annotations

import fcntl
import functools
import math
import os
import resource
import select
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Optional

from vinci.render import mounts, sandbox
from vinci.render.options import SandboxLimits
from vinci.render.protocol import FrameReader, ProtocolError, write_frame
from vinci.render.result import RenderFailure

RESULT_FD = 3  # the job process writes its result frames here
_EXIT_SETUP = 120  # the job process could not set itself up

Target = Callable[[], tuple[dict, bytes]]


@dataclass
class JobOutcome:
    header: Optional[dict]  # the job's result frame header, None if it sent none
    payload: bytes
    timed_out: bool = False
    exit_code: Optional[int] = None  # of the process, when the job ended it; <0: signal
    output: bytes = b""  # stdout+stderr of the process, up to the cap
    output_overflow: bool = False
    protocol_error: Optional[str] = None
    seconds: float = 0.0


@dataclass(frozen=True)
class JobSandbox:
    """How the worker can confine its jobs (probed once at worker start, see `mounts`)."""

    namespaces: int = 0  # mounts.JOB_NAMESPACES when each job gets its own, else 0
    uid: Optional[int] = None  # the uid a job switches to (a root worker's jobs), None: keep
    scratch_mounts: bool = False  # each job's directory is a fresh tmpfs of its own


def job_environment(home: str) -> dict[str, str]:
    """The whole environment a job sees: nothing inherited from the caller."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": os.path.join(home, ".matplotlib"),
        "SOURCE_DATE_EPOCH": "0",
        "FORCE_SOURCE_DATE": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "TEXMFVAR": os.path.join(home, ".texmf-var"),
        "TEXMFCONFIG": os.path.join(home, ".texmf-config"),
    }


def _arrange_fds(stdout_fd: int, result_fd: int) -> None:
    """Leave exactly 0 (/dev/null), 1 and 2 (output pipe) and RESULT_FD open."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 64) for fd in (stdout_fd, result_fd)]
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(high[0], 1)
    os.dup2(high[0], 2)
    os.dup2(high[1], RESULT_FD)
    os.closerange(RESULT_FD + 1, _max_fd())


@functools.lru_cache(maxsize=1)
def _max_fd() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return min(soft, 65536) if soft > 0 else 4096


def _process_allowance(extra: int, uid: int) -> int:
    """RLIMIT_NPROC counts all processes of the uid: allow `extra` more than exist now."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                count += entry.stat().st_uid == uid
            except OSError:
                continue
    return count + extra


def _set_limits(limits: SandboxLimits, cpu_seconds: float, nproc: int) -> None:
    memory = limits.memory_mb << 20
    cpu = int(math.ceil(cpu_seconds)) + 1
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb << 20, limits.file_mb << 20))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def _call(target: Target) -> tuple[dict, bytes]:
    """Run one job inside the job process; every failure becomes a failure header."""
    try:
        return target()
    except RenderFailure as failure:
        return {"ok": False, "kind": failure.kind, "error": failure.error}, b""
    except MemoryError:
        return {"ok": False, "kind": "limit", "error": "memory limit exceeded"}, b""
    except BaseException as error:  # the job reports every failure as a value
        return {"ok": False, "kind": "crash", "error": f"{type(error).__name__}: {error}"[:300]}, b""


def _job_main(targets: list[Target], limits: SandboxLimits, budget: tuple[float, int], workdir: str, box: JobSandbox) -> None:
    """Body of the job process: set up, run the targets in order, one frame each.
    budget: (CPU seconds, RLIMIT_NPROC)."""
    try:
        home = workdir
        if box.namespaces:  # PID 1 of fresh namespaces: own /proc, read-only view, scratch on /tmp
            mounts.confine_job(workdir)
            home = "/tmp"
        else:
            os.chdir(workdir)
        if box.uid is not None:
            os.setgroups([])
            os.setgid(box.uid)
            os.setuid(box.uid)
        sandbox.drop_capabilities()
        _set_limits(limits, *budget)
        os.environ.clear()
        os.environ.update(job_environment(home))
        tempfile.tempdir = home
    except BaseException as error:  # report, then exit: the worker maps it to a crash
        write_frame(RESULT_FD, {"ok": False, "kind": "crash", "error": f"job setup failed: {error}"})
        os._exit(_EXIT_SETUP)
    try:
        for target in targets:
            header, payload = _call(target)
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    continue
            write_frame(RESULT_FD, header, payload)
    finally:
        os._exit(0)


def _start(targets, limits, budget, workdir, out_w, res_w, box: JobSandbox) -> None:
    """The forked process: own session, optional namespaces, then the jobs. Never returns."""
    code = _EXIT_SETUP
    try:
        sandbox.die_with_parent()
        os.setsid()
        _arrange_fds(out_w, res_w)
        if not box.namespaces:
            _job_main(targets, limits, budget, workdir, box)
        sandbox.unshare(box.namespaces)
        child = os.fork()  # PID 1 of the new namespace: its whole tree dies with it
        if child == 0:
            sandbox.die_with_parent()
            _job_main(targets, limits, budget, workdir, box)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (1, 2, RESULT_FD):
            os.dup2(null, fd)
        _, status = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code
    finally:
        os._exit(code)


def run_jobs(
    targets: list[Target], timeouts: list[float], *, limits: SandboxLimits, workdir: str, max_payload: int, box: JobSandbox
):
    """Run every target (in as few fresh processes as failures allow); outcomes in order."""
    outcomes: list[JobOutcome] = []
    while len(outcomes) < len(targets):
        done = len(outcomes)
        outcomes += _run_process(targets[done:], timeouts[done:], limits, workdir, max_payload, box)
    return outcomes


def _run_process(targets, timeouts, limits, workdir, max_payload, box: JobSandbox) -> list[JobOutcome]:
    """Fork one job process for `targets`; return outcomes for a non-empty prefix of them."""
    nproc = _process_allowance(limits.processes, os.getuid() if box.uid is None else box.uid)  # before the fork
    _max_fd()
    res_r, res_w = os.pipe()
    out_r, out_w = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid = os.fork()
    if pid == 0:
        os.close(res_r)
        os.close(out_r)
        _start(targets, limits, (sum(timeouts), nproc), workdir, out_w, res_w, box)
    os.close(res_w)
    os.close(out_w)
    pidfd = os.pidfd_open(pid)
    collector = _Collector(res_r, out_r, limits.output_bytes, max_payload)
    try:
        outcomes = collector.collect(pidfd, timeouts)
        exit_code = _kill(pid)
        sandbox.reap_orphans()
        if len(outcomes) < len(targets) and not (outcomes and outcomes[-1].timed_out):
            outcomes.append(collector.ended(exit_code))
        return outcomes
    finally:
        os.close(pidfd)
        os.close(res_r)
        collector.close_output()


class _Collector:
    """Reads result frames and capped output from one job process."""

    def __init__(self, res_r: int, out_r: int, output_cap: int, max_payload: int):
        self.res_r, self.out_r, self.cap = res_r, out_r, output_cap
        self.reader = FrameReader(max_payload)
        self.output = bytearray()
        self.overflow = False
        self.protocol_error: Optional[str] = None
        self.watch = {res_r, out_r}
        os.set_blocking(res_r, False)
        os.set_blocking(out_r, False)

    def collect(self, pidfd: int, timeouts: list[float]) -> list[JobOutcome]:
        outcomes: list[JobOutcome] = []
        started = time.monotonic()
        deadline = started + timeouts[0]
        self.watch.add(pidfd)
        try:
            while len(outcomes) < len(timeouts):
                frame = self.reader.take()
                if frame is not None:
                    now = time.monotonic()
                    outcomes.append(JobOutcome(frame[0], frame[1], output_overflow=self.overflow, seconds=now - started))
                    if len(outcomes) < len(timeouts):
                        started, deadline = now, now + timeouts[len(outcomes)]
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    outcomes.append(JobOutcome(None, b"", timed_out=True, seconds=time.monotonic() - started))
                    break
                ready, _, _ = select.select(list(self.watch), [], [], remaining)
                if self.res_r in ready:
                    self.reader.feed(self.res_r)
                    if self.reader.eof:
                        self.watch.discard(self.res_r)
                if self.out_r >= 0 and self.out_r in ready:
                    self._read_output()
                if pidfd in ready:  # the process is gone: take what it sent, then stop
                    while self.res_r in self.watch and self.reader.feed(self.res_r):
                        pass
                    while len(outcomes) < len(timeouts) and (frame := self.reader.take()) is not None:
                        outcomes.append(JobOutcome(frame[0], frame[1], output_overflow=self.overflow, seconds=time.monotonic() - started))
                    break
        except ProtocolError as error:
            self.protocol_error = str(error)
        return outcomes

    def _read_output(self) -> None:
        try:
            chunk = os.read(self.out_r, 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            self.watch.discard(self.out_r)
            return
        self.output += chunk[: max(0, self.cap - len(self.output))]
        if len(self.output) >= self.cap:
            self.overflow = True  # stop reading: the job's next write gets EPIPE
            self.close_output()

    def close_output(self) -> None:
        if self.out_r >= 0:
            self.watch.discard(self.out_r)
            os.close(self.out_r)
            self.out_r = -1

    def ended(self, exit_code: Optional[int]) -> JobOutcome:
        """Outcome of the job that was running when the process ended without its frame."""
        if self.out_r >= 0:
            try:
                chunk = os.read(self.out_r, 1 << 16)
            except BlockingIOError:
                chunk = b""
            self.output += chunk[: max(0, self.cap - len(self.output))]
        return JobOutcome(None, b"", False, exit_code, bytes(self.output), self.overflow, self.protocol_error)


def _kill(pid: int) -> Optional[int]:
    """Kill the job process's session (and namespace); return its exit code (<0: signal)."""
    for kill in (os.kill, os.killpg):
        try:
            kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return -(code - 128) if code > 128 else code
