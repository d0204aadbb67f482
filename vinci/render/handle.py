"""The pool's side of one worker process: start it, send it jobs, enforce the deadline.

`WorkerHandle` starts `python -m vinci.render.worker` (inside bubblewrap where that works),
waits for its ready frame, sends a request of one or more jobs and waits for the reply until
the jobs' timeouts plus a grace period. Each request carries a fresh random nonce, and only
a reply that echoes it is taken. A worker that dies, sends garbage, overruns, answers with
the wrong nonce or writes when nobody asked is killed together with everything in its
sandbox (only the jobs of that request fail), and started afresh on its next request.
"""

from __future__ import annotations

import logging
import os
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import time
from typing import NamedTuple, Optional

from vinci.render import sandbox
from vinci.render.options import RenderOptions, SandboxLimits
from vinci.render.protocol import MAX_REQUEST_BYTES, FrameReader, ProtocolError, frame_to_image, write_frame
from vinci.render.result import FAILURE_KINDS, RenderResult
from vinci.render.trace import clean_trace

log = logging.getLogger(__name__)


def _worker_env(use_bwrap: bool) -> dict[str, str]:
    home = os.environ.get("HOME", "/")
    cache = sandbox.matplotlib_cache()
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": home,
        "LANG": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join(str(path) for path in sandbox.import_paths()),
        "PYTHONHASHSEED": "0",  # same program, same set/dict order, same image
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "VINCI_MPL_SEED": cache,
        "VINCI_RENDER_BWRAP": "1" if use_bwrap else "0",
    }


class WorkItem(NamedTuple):
    """One job as the pool hands it to a worker (defaults already resolved)."""

    language: str  # canonical
    code: str
    timeout: float
    options: RenderOptions
    trace: bool = False  # python only: send back the figure's call trace


class WorkerStartError(RuntimeError):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class WorkerHandle:
    """The pool's side of one worker process (not thread-safe: one job at a time)."""

    def __init__(self, kind: str, use_bwrap: bool, startup_timeout: float, tex_formats: int = 8):
        self.kind = kind
        self.startup_timeout = startup_timeout
        args = ["--kind", kind, "--tex-formats", str(tex_formats)]
        self.command, self.isolation = sandbox.worker_command(args, use_bwrap)
        self.use_bwrap = use_bwrap and self.isolation == "bubblewrap"
        self.proc: Optional[subprocess.Popen] = None
        self.reader: Optional[FrameReader] = None
        self.ready = False
        self.restarts = -1
        self.scratch: Optional[str] = None  # the worker's directory outside bwrap
        self.warned = False
        self.confinement: list[str] = []  # what the worker could not confine, from its ready frame

    def start(self) -> None:
        self.kill()
        self.restarts += 1
        self.proc = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self._env(),
            cwd="/",
            start_new_session=True,
        )
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.reader = FrameReader(max_payload=1 << 31)
        self.ready = False

    def _env(self) -> dict[str, str]:
        env = _worker_env(self.use_bwrap)
        if not self.use_bwrap:  # bwrap gives the worker a private /tmp that dies with it
            self.scratch = tempfile.mkdtemp(prefix="vinci-worker-")
            env["VINCI_WORKER_ROOT"] = self.scratch
        return env

    def _wait_frame(self, deadline: float):
        """Next frame, None at the deadline; EOFError when the worker is gone."""
        fd = self.proc.stdout.fileno()
        while self.reader.frame is None:
            if self.reader.eof:
                raise EOFError("render worker exited")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                self.reader.feed(fd)
        return self.reader.take()

    def ensure_ready(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        if self.ready:
            return
        try:
            frame = self._wait_frame(time.monotonic() + self.startup_timeout)
        except (EOFError, ProtocolError) as error:
            self.kill()
            raise WorkerStartError("crash", f"{self.kind} render worker failed to start ({error})")
        if frame is None:
            self.kill()
            raise WorkerStartError("timeout", f"{self.kind} render worker did not start in {self.startup_timeout:g}s")
        header, _ = frame
        if not header.get("ready"):
            self.kill()
            raise WorkerStartError(header.get("kind", "crash"), header.get("error", "worker failed to start"))
        self.ready = True
        weak = [str(w) for w in header.get("weak", [])] if isinstance(header.get("weak"), list) else []
        if weak and not self.warned:
            self.warned = True  # once per worker slot, not at every restart
            log.warning("render sandbox (%s worker): %s", self.kind, "; ".join(weak))
        self.confinement = weak

    def run(self, items: list[WorkItem], limits: SandboxLimits) -> list[RenderResult]:
        """Render the items in this worker; results in order."""
        started = time.monotonic()

        def failures(kind, error):
            seconds = time.monotonic() - started
            return [RenderResult.failure(kind, error, seconds, item.language) for item in items]

        try:
            self.ensure_ready()
        except WorkerStartError as error:
            return failures(error.kind, str(error))
        codes = [item.code.encode("utf-8", errors="replace") for item in items]
        jobs = [
            {
                "language": item.language,
                "timeout": item.timeout,
                "options": item.options.to_dict(),
                "limits": limits.to_dict(),
                "length": len(code),
                "trace": bool(item.trace and item.language == "python"),
            }
            for item, code in zip(items, codes)
        ]
        body = b"".join(codes)
        if len(body) > MAX_REQUEST_BYTES:
            return failures("limit", f"program is {len(body)} bytes; the cap is {MAX_REQUEST_BYTES} per request")
        if self._stray_bytes():
            self.kill()  # the worker wrote without being asked: nothing it says can be trusted
            try:
                self.ensure_ready()
            except WorkerStartError as error:
                return failures(error.kind, str(error))
        budget = sum(item.timeout for item in items)
        nonce = secrets.token_hex(16)
        try:
            write_frame(self.proc.stdin.fileno(), {"jobs": jobs, "nonce": nonce}, body)
            frame = self._wait_frame(time.monotonic() + budget + limits.grace_s)
        except (BrokenPipeError, EOFError, ProtocolError) as error:
            self.kill()
            return failures("crash", f"render worker died ({type(error).__name__}); it was replaced")
        if frame is None:
            self.kill()
            return failures("timeout", f"did not finish within {budget:g}s; the worker was replaced")
        reply, payload = frame
        if reply.get("nonce") != nonce:
            self.kill()
            return failures("crash", "render worker reply is not for this request (forged or stale); it was replaced")
        results = reply.get("results")
        if not isinstance(results, list) or len(results) != len(items):
            self.kill()
            return failures("crash", "render worker sent a malformed reply; it was replaced")
        return _unpack(results, payload, items)

    def _stray_bytes(self) -> bool:
        """True when the worker's pipe holds bytes nobody asked for (read and dropped)."""
        if self.reader.buffer or self.reader.frame is not None:
            return True
        ready, _, _ = select.select([self.proc.stdout.fileno()], [], [], 0)
        return bool(ready)

    def kill(self) -> None:
        """SIGKILL the worker's sandbox and wait until every process in it is gone."""
        proc, self.proc, self.ready = self.proc, None, False
        if proc is None:
            return
        tree = _descendants(proc.pid)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            log.debug("worker %d already gone", proc.pid)
        for pid in tree:  # outside bwrap, job processes sit in sessions of their own
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            stream.close()
        give_up = time.monotonic() + 5.0
        while any(_alive(pid) for pid in tree) and time.monotonic() < give_up:
            time.sleep(0.01)
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def close(self, wait_s: float = 5.0) -> None:
        """Ask the worker to exit (EOF), then make sure it has."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                proc.stdin.close()
                proc.wait(wait_s)
            except (OSError, subprocess.TimeoutExpired):
                log.debug("worker %d did not exit on EOF", proc.pid)
        self.kill()


def _unpack(results: list[dict], payload: bytes, items: list[WorkItem]) -> list[RenderResult]:
    """RenderResults from a worker reply (images concatenated in the payload)."""
    out, offset = [], 0
    for reply, (language, _, _, options, traced) in zip(results, items):
        seconds = float(reply.get("seconds", 0.0))
        if not reply.get("ok"):
            kind = reply.get("kind") if reply.get("kind") in FAILURE_KINDS else "crash"
            out.append(RenderResult.failure(kind, str(reply.get("error", "render failed")), seconds, language))
            continue
        width, height = reply.get("size", (0, 0))
        size = max(0, int(width) * int(height) * 3)
        try:
            image = frame_to_image(reply, payload[offset : offset + size], options.max_pixels)
        except ProtocolError as error:
            out.append(RenderResult.failure("crash", f"malformed render: {error}", seconds, language))
        else:
            trace = clean_trace(reply.get("trace")) if traced and language == "python" else None
            out.append(RenderResult(True, image, None, seconds, None, language, trace))
        offset += size
    return out


def _descendants(pid: int) -> list[int]:
    """All descendants of `pid`, from /proc (children listed per thread)."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as children:
                    kids = [int(k) for k in children.read().split()]
            except OSError:
                continue
            found += kids
            frontier += kids
    return found


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False
