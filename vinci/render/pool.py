"""`RenderPool`: warm sandboxed workers that render many programs concurrently.

Three kinds of worker process (see `worker`): `chart` workers serve python and start with
the pool; `light` workers serve svg and latex, and `browser` workers serve html. The last
two start on their first job, so python-only users never start Chromium. A job thread takes
an idle worker of its kind and hands it a request (one job, or a batch of SVG documents);
a worker that dies or overruns is killed with its whole sandbox and started afresh on its
next request (see `handle`), so the pool keeps serving. Every outcome is a `RenderResult`;
only an unknown language raises (ValueError).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Optional, Sequence

from vinci.render.handle import WorkerHandle, WorkItem
from vinci.render.options import RenderJob, RenderOptions, SandboxLimits, worker_kind
from vinci.render.protocol import MAX_REQUEST_BYTES
from vinci.render.result import RenderResult
from vinci.tasks import canonical

log = logging.getLogger(__name__)
MAX_SVG_BATCH = 64  # svg documents per job process: amortises the fork over ~2 ms renders
MAX_BATCH_BYTES = MAX_REQUEST_BYTES // 4  # svg code per request: well inside the worker's frame cap
_ISOLATION_LOGGED = False
_ISOLATION_LOCK = threading.Lock()


def _log_isolation_once(description: str, use_bwrap: bool) -> None:
    global _ISOLATION_LOGGED
    with _ISOLATION_LOCK:
        if _ISOLATION_LOGGED:
            return
        _ISOLATION_LOGGED = True
    if use_bwrap and description == "bubblewrap":
        log.info("render sandbox: bubblewrap (read-only filesystem, no network, PID namespaces)")
    else:
        log.warning(
            "render sandbox: %s; falling back to rlimits, sessions and namespaces where permitted "
            "(jobs may be able to write files and reach the network)",
            description,
        )


def svg_batches(indices: list[int], sizes: list[int], count: int, max_bytes: int = MAX_BATCH_BYTES) -> list[list[int]]:
    """Split SVG jobs into batches of at most `count` documents and `max_bytes` of code (a
    document bigger than that travels alone, and fails with kind 'limit' past the frame cap)."""
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index, size in zip(indices, sizes):
        if current and (len(current) >= count or used + size > max_bytes):
            batches.append(current)
            current, used = [], 0
        current.append(index)
        used += size
    if current:
        batches.append(current)
    return batches


def _shutdown(handles: list[WorkerHandle]) -> None:
    for handle in handles:
        handle.close(wait_s=2.0)


class RenderPool:
    """Warm sandboxed renderers for many jobs at once; a context manager.

    workers: workers per kind: python (started now), svg+latex (started on first use).
    html_workers: Chromium workers (default: workers), started on the first html job. timeout: seconds per job unless the
    job sets its own. options/limits: defaults for every job. bubblewrap: run workers in
    bubblewrap when it works (False: rlimits and namespaces only). tex_formats: LaTeX
    preambles each svg+latex worker keeps compiled, so a repeated one loads its packages
    once (see `texformat`; 0 turns this off).
    """

    def __init__(
        self,
        workers: int = 2,
        timeout: float = 10.0,
        options: Optional[RenderOptions] = None,
        *,
        html_workers: Optional[int] = None,
        limits: Optional[SandboxLimits] = None,
        bubblewrap: bool = True,
        startup_timeout: float = 120.0,
        tex_formats: int = 8,
    ):
        html_workers = workers if html_workers is None else html_workers
        if workers < 1 or html_workers < 1:
            raise ValueError(f"workers and html_workers must be >= 1, got {workers}, {html_workers}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self.timeout = float(timeout)
        self.options = options or RenderOptions()
        self.limits = limits or SandboxLimits()
        self._pid = os.getpid()
        self._closed = False
        self._lock = threading.Lock()
        counts = {"chart": workers, "light": workers, "browser": html_workers}
        self._handles = {k: [WorkerHandle(k, bubblewrap, startup_timeout, tex_formats) for _ in range(n)] for k, n in counts.items()}
        self._idle = {k: queue.SimpleQueue() for k in counts}
        for kind, handles in self._handles.items():
            for handle in handles:
                self._idle[kind].put(handle)
        first = self._handles["chart"][0]
        _log_isolation_once(first.isolation, bubblewrap)
        self.isolation = first.isolation
        for handle in self._handles["chart"]:
            handle.start()  # warm now; the other kinds wait for their first job
        self._executors = {k: ThreadPoolExecutor(n, thread_name_prefix=f"render-{k}") for k, n in counts.items()}
        self._batches = ThreadPoolExecutor(4, thread_name_prefix="render-batch")
        self._finalizer = weakref.finalize(self, _shutdown, [h for hs in self._handles.values() for h in hs])

    def __enter__(self) -> "RenderPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError("RenderPool is closed")
        if os.getpid() != self._pid:
            raise RuntimeError("RenderPool was created in another process; create a new pool after fork")

    def _run_batch(self, kind: str, items: list) -> list[RenderResult]:
        handle = self._idle[kind].get()
        try:
            return handle.run(items, self.limits)
        finally:
            self._idle[kind].put(handle)

    def render_many(self, jobs: Sequence[RenderJob]) -> list[RenderResult]:
        """Render all jobs concurrently; results come back in the order of `jobs`.

        SVG jobs travel to the workers in batches (several documents per job process);
        every other job is sent, and run, on its own.
        """
        self._check_usable()
        items = [
            WorkItem(
                canonical(job.language),
                job.code,
                float(self.timeout if job.timeout is None else job.timeout),
                job.options or self.options,
                job.trace,
            )
            for job in jobs
        ]  # canonical() raises ValueError for an unknown language before any work starts
        svg = [i for i, item in enumerate(items) if item.language == "svg"]
        size = max(1, min(MAX_SVG_BATCH, math.ceil(len(svg) / (2 * len(self._handles["light"])))))
        batches = svg_batches(svg, [len(items[i].code.encode("utf-8", errors="replace")) for i in svg], size)
        batches += [[i] for i, item in enumerate(items) if item.language != "svg"]
        futures = []
        for batch in batches:
            kind = worker_kind(items[batch[0]].language)
            futures.append((batch, self._executors[kind].submit(self._run_batch, kind, [items[i] for i in batch])))
        results: list[Optional[RenderResult]] = [None] * len(items)
        for batch, future in futures:
            for index, result in zip(batch, future.result()):
                results[index] = result
        return results

    def submit(self, jobs: Sequence[RenderJob]) -> "Future[list[RenderResult]]":
        """Start rendering in the background; the future holds the ordered results."""
        self._check_usable()
        for job in jobs:
            canonical(job.language)
        return self._batches.submit(self.render_many, list(jobs))

    def render(self, language: str, code: str, timeout: Optional[float] = None) -> RenderResult:
        return self.render_many([RenderJob(language, code, timeout)])[0]

    def worker_pids(self) -> list[int]:
        """PIDs of the live worker processes (the bwrap launcher where sandboxed)."""
        return [h.proc.pid for hs in self._handles.values() for h in hs if h.proc and h.proc.poll() is None]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for executor in (self._batches, *self._executors.values()):
            executor.shutdown(wait=True, cancel_futures=True)
        self._finalizer()
