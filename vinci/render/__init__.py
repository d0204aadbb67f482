"""Sandboxed, warm renderers: program text in, RGB image (or a classified failure) out.

`render(language, code)` serves one-off calls through a lazily created shared pool;
`RenderPool` renders many jobs concurrently. Languages: python (matplotlib), svg, html,
latex (`tikz` is an alias). Nothing starts at import time.
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import Optional

from vinci.render.options import RenderJob, RenderOptions, SandboxLimits
from vinci.render.pool import RenderPool
from vinci.render.result import FAILURE_KINDS, RenderResult
from vinci.tasks import canonical

__all__ = ["render", "RenderJob", "RenderOptions", "RenderPool", "RenderResult", "SandboxLimits", "FAILURE_KINDS"]

_shared: Optional[RenderPool] = None
_shared_lock = threading.Lock()


def _shared_pool() -> RenderPool:
    """The pool behind `render`, created on first use and again after a fork."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared._pid != os.getpid():
            _shared = RenderPool(workers=min(2, os.cpu_count() or 1))
            atexit.register(_shared.close)
        return _shared


def render(language: str, code: str, timeout: float = 10.0, options: Optional[RenderOptions] = None) -> RenderResult:
    """Render one program; a failure is a `RenderResult` with ok=False, never an exception
    (an unknown language raises ValueError)."""
    canonical(language)
    return _shared_pool().render_many([RenderJob(language, code, timeout, options)])[0]
