"""A warm render worker: `python -m vinci.render.worker --kind chart|light|browser`.

The pool starts it (inside bubblewrap where that works) and talks to it with frames over
stdin/stdout (see `protocol`). A `chart` worker imports matplotlib (and draws a throwaway
chart) once, then runs every python job in a fresh forked job process (`jobs.run_jobs`).
A `light` worker does the same for svg and latex with only cairosvg imported: forking a
small process is several times cheaper than forking one that holds matplotlib, and svg jobs
take milliseconds; it also keeps the formats of repeated LaTeX preambles (see `texformat`),
so their packages load once. A `browser` worker keeps one Chromium warm and renders html jobs in it,
killing and restarting the browser when a page hangs. One job at a time; EOF on stdin ends
the worker. A python job marked `trace` also sends back the call trace of its figure (see
`trace`); the worker checks and caps it before passing it on.
"""

from __future__ import annotations

import argparse
import functools
import glob
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import Callable, Optional

from vinci.render import mounts, sandbox
from vinci.render.jobs import JobOutcome, JobSandbox, run_jobs
from vinci.render.latex import make_document, render_latex
from vinci.render.options import WORKER_KINDS, RenderOptions, SandboxLimits
from vinci.render.protocol import MAX_REQUEST_BYTES, FrameReader, ProtocolError, frame_to_image, image_to_frame, write_frame
from vinci.render.result import FAILURE_KINDS, RenderFailure
from vinci.render.texformat import FormatCache
from vinci.render.trace import clean_trace

log = logging.getLogger("vinci.render.worker")
IN_BWRAP = os.environ.get("VINCI_RENDER_BWRAP") == "1"


# A renderer runs inside the job process: (code, options, timeout, trace) -> result frame.
Renderer = Callable[[str, RenderOptions, float, bool], tuple[dict, bytes]]


def _python_frame(code: str, options: RenderOptions, timeout: float, trace: bool) -> tuple[dict, bytes]:
    """Render a matplotlib program; with `trace`, its call trace rides in the header."""
    from vinci.render import python
    from vinci.render.trace import CallTracer

    tracer = CallTracer() if trace else None
    header, payload = image_to_frame(python.render_python(code, options, tracer))
    if tracer is not None:
        header["trace"] = tracer.trace
        if tracer.error:
            header["trace_error"] = tracer.error
    return header, payload


def _renderers(kind: str) -> dict[str, Renderer]:
    if kind == "chart":
        from vinci.render import python

        python.preload()
        return {"python": _python_frame}
    from vinci.render import svg

    svg.preload()
    return {
        "svg": lambda code, options, timeout, trace: image_to_frame(svg.render_svg(code, options)),
        "latex": _latex_frame,
    }


def _latex_frame(code: str, options: RenderOptions, timeout: float, trace: bool, tex_format: str = "plain"):
    return image_to_frame(render_latex(code, options, timeout, tex_format))


def _signal_reason(signum: int) -> tuple[str, str]:
    if signum == signal.SIGXCPU:
        return "limit", "CPU time limit exceeded"
    if signum == signal.SIGXFSZ:
        return "limit", "file size limit exceeded"
    if signum == signal.SIGKILL:
        return "crash", "killed by SIGKILL (out of memory?)"
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    return "crash", f"the program crashed ({name})"


def classify(outcome: JobOutcome, timeout: float, limits: SandboxLimits, max_pixels: int, trace: bool = False):
    """(reply header, payload) for a finished job; with `trace`, the job's call trace checked
    and capped (`trace.clean_trace`), None when it sent none."""
    header = outcome.header
    if header is not None and header.get("ok"):
        try:
            frame_to_image(header, outcome.payload, max_pixels)
        except ProtocolError as error:
            return {"ok": False, "kind": "crash", "error": f"malformed result: {error}"}, b""
        reply = {"ok": True, "size": header["size"]}
        if trace:
            reply["trace"] = clean_trace(header.get("trace"))
            if header.get("trace") is None:
                log.warning("no call trace: %s", str(header.get("trace_error", "the job sent none"))[:300])
        return reply, outcome.payload
    if outcome.output_overflow:
        cap = limits.output_bytes
        return {"ok": False, "kind": "limit", "error": f"output exceeded the {cap}-byte stdout/stderr cap"}, b""
    if header is not None:
        kind = header.get("kind") if header.get("kind") in FAILURE_KINDS else "crash"
        return {"ok": False, "kind": kind, "error": str(header.get("error", ""))[:300]}, b""
    if outcome.protocol_error:
        return {"ok": False, "kind": "crash", "error": f"malformed result: {outcome.protocol_error}"}, b""
    if outcome.timed_out:
        return {"ok": False, "kind": "timeout", "error": f"did not finish within {timeout:g}s"}, b""
    code = outcome.exit_code
    if code is not None and code < 0:
        kind, error = _signal_reason(-code)
        return {"ok": False, "kind": kind, "error": error}, b""
    tail = outcome.output.decode(errors="replace").strip().splitlines()[-1:] or [""]
    detail = f": {tail[0][:200]}" if tail[0] else ""
    return {"ok": False, "kind": "no-output", "error": f"the program exited without an image{detail}"}, b""


class Worker:
    def __init__(self, kind: str, root: str, tex_formats: int = 8, private_mounts: Optional[str] = "not tried", view: bool = False):
        self.kind = kind
        self.root = root
        self.jobs_root = os.path.join(root, "jobs")
        os.makedirs(self.jobs_root, exist_ok=True)
        self.browser = None
        self.renderers = None
        self.formats = FormatCache(capacity=tex_formats) if kind == "light" else None  # LaTeX preambles
        self.private_mounts = private_mounts  # None: this worker has mounts of its own, else why not
        self.view = view  # it sees only `sandbox.visible_paths` (bubblewrap or `mounts.enter_view`)
        self.box = JobSandbox()

    def warm(self) -> dict:
        """Start the renderers; the reply says how jobs are confined ("weak": what is missing)."""
        weak = []
        if self.private_mounts is not None:
            weak.append(f"no per-job scratch tmpfs: {self.private_mounts}")
        namespaces, why = mounts.probe_job_namespaces(self.jobs_root) if self.private_mounts is None else (0, None)
        if not namespaces:
            weak.append(
                "jobs see every process of this user in /proc and can read their /proc/<pid>/environ"
                f" ({why or 'no job namespaces'})"
            )
        if not self.view:
            weak.append("jobs see the whole filesystem: every file this user can read")
        uid = sandbox.JOB_UID if os.geteuid() == 0 and self.view and namespaces else None
        if os.geteuid() == 0 and uid is None:
            weak.append("jobs run as root: they can read every file root owns")
        self.box = JobSandbox(namespaces=namespaces, uid=uid, scratch_mounts=self.private_mounts is None)
        if self.kind != "browser":
            self.renderers = _renderers(self.kind)
            return {"namespaces": namespaces, "weak": weak}
        from vinci.render.html import Browser

        self.browser = Browser(root=self.root, uid=None if uid is None else sandbox.BROWSER_UID)
        self.browser.start(RenderOptions())
        sandbox.reap_zombies(keep=self.browser.pids())
        return {"namespaces": 0, "weak": weak}

    def handle(self, header: dict, payload: bytes) -> tuple[dict, bytes]:
        """One request: a list of jobs (codes concatenated in the payload); replies in order."""
        jobs, codes, offset = header["jobs"], [], 0
        for job in jobs:
            codes.append(payload[offset : offset + job["length"]].decode("utf-8", errors="replace"))
            offset += job["length"]
        replies: list[tuple[dict, bytes]] = []
        start = 0
        while start < len(jobs):
            end = start + 1
            while end < len(jobs) and jobs[start]["language"] == jobs[end]["language"] == "svg":
                end += 1  # only svg documents share a job process (see `jobs`)
            replies += self._run(jobs[start:end], codes[start:end])
            start = end
        body = b"".join(p for _, p in replies)
        return {"results": [h for h, _ in replies], "nonce": header.get("nonce")}, body

    def _run(self, jobs: list[dict], codes: list[str]) -> list[tuple[dict, bytes]]:
        options = [RenderOptions.from_dict(job.get("options", {})) for job in jobs]
        timeouts = [float(job["timeout"]) for job in jobs]
        traces = [job.get("trace") is True for job in jobs]
        limits = SandboxLimits.from_dict(jobs[0].get("limits", {}))
        if self.kind == "browser":
            if limits.html_memory_mb != self.browser.memory_mb:  # restart under the job's cap
                self.browser.kill()
                self.browser.memory_mb = limits.html_memory_mb
            return [self._browser_job(code, opt, t) for code, opt, t in zip(codes, options, timeouts)]
        render = self.renderers.get(jobs[0]["language"])
        if render is None:
            return [({"ok": False, "kind": "unsupported", "error": f"no renderer for {jobs[0]['language']}"}, b"")] * len(jobs)
        workdir = self._scratch(limits)
        plan = ("plain", None)  # a latex job runs alone: (tex_format, preamble key), see texformat
        if jobs[0]["language"] == "latex" and self.formats is not None:
            plan = self.formats.plan(make_document(codes[0]))
            if plan[0] == "cached":
                self.formats.install(plan[1], workdir)
            targets = [functools.partial(render, codes[0], options[0], timeouts[0], traces[0], plan[0])]
        else:
            targets = [
                functools.partial(render, code, opt, t, tr) for code, opt, t, tr in zip(codes, options, timeouts, traces)
            ]
        try:
            outcomes = run_jobs(
                targets,
                timeouts,
                limits=limits,
                workdir=workdir,
                max_payload=max(o.max_pixels for o in options) * 3 + 1024,
                box=self.box,
            )
            if self.formats is not None:
                self.formats.settle(*plan, workdir, finished=outcomes[0].header is not None)
        finally:
            self._drop_scratch(workdir)
            self._wipe_shared_tmp()
        replies = []
        for outcome, opt, t, tr in zip(outcomes, options, timeouts, traces):
            reply, body = classify(outcome, t, limits, opt.max_pixels, tr)
            reply["seconds"] = outcome.seconds
            if plan[1] is not None:
                reply["tex_format"] = plan[0]
            replies.append((reply, body))
        return replies

    def _browser_job(self, code: str, options: RenderOptions, timeout: float) -> tuple[dict, bytes]:
        result: dict = {}
        started = time.monotonic()

        def job():
            try:
                result["frame"] = image_to_frame(self.browser.render(code, options, timeout))
            except RenderFailure as failure:
                result["frame"] = ({"ok": False, "kind": failure.kind, "error": failure.error}, b"")
            except Exception as error:  # any driver failure is this job's crash, reported
                self.browser.kill()
                message = f"{type(error).__name__}: {error}".splitlines()[0][:300]
                result["frame"] = ({"ok": False, "kind": "crash", "error": message}, b"")

        thread = threading.Thread(target=job, daemon=True)
        thread.start()
        thread.join(timeout + 5.0)  # page load is capped at `timeout`; the rest is screenshot slack
        if thread.is_alive():
            self.browser.kill()
            sandbox.reap_orphans()
            thread.join(10.0)
            return {"ok": False, "kind": "timeout", "error": f"page did not render within {timeout:g}s"}, b""
        result["frame"][0]["seconds"] = time.monotonic() - started
        if self.browser.driver is None:
            sandbox.reap_orphans()
        else:
            sandbox.reap_zombies(keep=self.browser.pids())
        header, payload = result["frame"]
        if header.get("ok"):
            try:
                frame_to_image(header, payload, options.max_pixels)
            except ProtocolError as error:
                return {"ok": False, "kind": "limit", "error": str(error)}, b""
        return header, payload

    def _scratch(self, limits: SandboxLimits) -> str:
        """An empty directory for one job: a fresh tmpfs of `limits.scratch_mb` where possible."""
        workdir = tempfile.mkdtemp(prefix="job-", dir=self.jobs_root)
        if self.box.scratch_mounts:
            uid = os.geteuid() if self.box.uid is None else self.box.uid
            try:
                mounts.mount_scratch(workdir, limits.scratch_mb, uid, uid if self.box.uid is not None else os.getegid())
            except OSError:
                os.rmdir(workdir)
                raise
        return workdir

    def _drop_scratch(self, workdir: str) -> None:
        """Wipe a job's scratch: detach its tmpfs (freeing every byte), then the directory."""
        if self.box.scratch_mounts:
            try:
                mounts.unmount_scratch(workdir)
            except OSError as error:
                log.warning("%s", error)
        shutil.rmtree(workdir, ignore_errors=True)

    def _wipe_shared_tmp(self) -> None:
        """Inside bwrap /tmp and /dev/shm are private to the worker: clear what a job left."""
        if not IN_BWRAP:
            return
        for path in glob.glob("/tmp/*") + glob.glob("/tmp/.*") + glob.glob("/dev/shm/*") + glob.glob("/dev/shm/.*"):
            if os.path.abspath(path) == self.root:
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError as error:
                    log.warning("could not remove %s: %s", path, error)

    def close(self) -> None:
        if self.browser is not None:
            self.browser.kill()
        sandbox.reap_orphans(1.0)


def _read_frame(fd: int, reader: FrameReader):
    while reader.frame is None:
        if reader.eof:
            return None
        reader.feed(fd)
    return reader.take()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=WORKER_KINDS, required=True)
    parser.add_argument("--tex-formats", type=int, default=8, help="LaTeX preamble formats kept (0: off)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="render worker: %(message)s")
    proto_in, proto_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)  # stray prints from libraries go to stderr, never into the protocol
    root = "/tmp/.vinci-worker" if IN_BWRAP else os.environ.get("VINCI_WORKER_ROOT") or tempfile.mkdtemp(prefix="vinci-worker-")
    os.makedirs(root, exist_ok=True)
    os.chmod(root, 0o755)  # a root worker's Chromium runs as another uid; jobs never see it
    sandbox.become_subreaper()
    private_mounts = mounts.confine_worker()  # own mount namespace; not dumpable from here on
    view = IN_BWRAP  # bubblewrap's binds already show only `sandbox.visible_paths`
    if not IN_BWRAP and private_mounts is None:
        try:
            paths = [str(p) for p in sandbox.outermost(sandbox.visible_paths())]
            mounts.enter_view(paths, root, sandbox.WORKER_TMP_MB)
            view = True
        except OSError as error:
            log.warning("render sandbox: jobs see the host's files (%s)", error)
    _seed_matplotlib_cache(root)  # after the view: its font cache seed is one of the visible paths
    worker = Worker(args.kind, root, tex_formats=args.tex_formats, private_mounts=private_mounts, view=view)
    started = time.monotonic()
    try:
        info = worker.warm()
        write_frame(proto_out, {"ready": True, "pid": os.getpid(), "warm_s": time.monotonic() - started, **info})
        reader = FrameReader(max_payload=MAX_REQUEST_BYTES)
        while True:
            frame = _read_frame(proto_in, reader)
            if frame is None:
                return 0
            reply, body = worker.handle(*frame)
            write_frame(proto_out, reply, body)
    except RenderFailure as failure:
        write_frame(proto_out, {"ready": False, "kind": failure.kind, "error": failure.error})
        return 1
    finally:
        worker.close()
        if not IN_BWRAP:
            shutil.rmtree(root, ignore_errors=True)


def _seed_matplotlib_cache(root: str) -> None:
    """Give matplotlib a writable config dir, seeded with the caller's font cache if any."""
    target = os.path.join(root, "matplotlib")
    os.makedirs(target, exist_ok=True)
    seed = os.environ.get("VINCI_MPL_SEED")
    if seed:
        for path in glob.glob(os.path.join(seed, "fontlist-*.json")):
            shutil.copy(path, target)
    os.environ["MPLCONFIGDIR"] = target


if __name__ == "__main__":
    sys.exit(main())
