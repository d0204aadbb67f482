"""Compile a repeated LaTeX preamble once: a light worker's cache of pdflatex formats.

Loading the packages (tikz, pgfplots, their libraries) is most of pdflatex's time on a small
figure, and in RL the same preamble comes back in nearly every sampled program. mylatexformat
dumps a document's preamble (everything before `\\begin{document}`) into a format file; the
same document compiled from that format skips straight to its body and draws the same pixels
(every figure of the TikZ corpus: tests/render/test_texformat.py; synthetic figures:
benchmarks/tex_formats.py, which also measures the speed-up).

The worker asks `FormatCache.plan` before each LaTeX job:
- "plain": the preamble is new (or cannot be dumped): compile the usual way;
- "build": its second sighting: the job builds the format, then compiles from it;
- "cached": the worker writes the stored format into the job's directory first.
After the job, `settle` keeps the format a "build" job left, and drops a cached one that the
job deleted because its compile failed where the plain one succeeded (see `latex.render_latex`).

Formats are keyed by a hash of the exact preamble text, so one is only ever loaded by a
document that would have run the same preamble anyway. Their bytes stay in the worker's memory,
so no job can change what a later job loads, and a "build" job keeps job.fmt only if its bytes
are still those of the dump (a document body may write files in its own directory and must not
forge the format). A preamble that fails to build twice is compiled plainly from then on.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import OrderedDict
from typing import Optional

from vinci.render.latex import FORMAT_FILE

BEGIN = "\\begin{document}"
MAX_FORMAT_BYTES = 64 << 20  # a tikz + pgfplots format is ~7 MB
MAX_BUILD_FAILURES = 2


def preamble_key(document: str) -> Optional[str]:
    """Hash of the text before `\\begin{document}`; None when a format must not be used:
    no or several `\\begin{document}` (one may hide in a comment, so where the dump stops is
    unclear), or a document that drives mylatexformat itself."""
    if document.count(BEGIN) != 1 or "\\endofdump" in document or "mylatexformat" in document:
        return None
    preamble = document[: document.index(BEGIN)]
    return hashlib.sha256(preamble.encode("utf-8", errors="surrogatepass")).hexdigest()


class FormatCache:
    """Formats of recently repeated preambles, least recently used evicted first.

    capacity: formats kept (0 turns the cache off). build_after: sightings of a preamble
    before its job builds a format (a preamble seen once costs no build).
    """

    def __init__(self, capacity: int = 8, build_after: int = 2, remember: int = 4096):
        self.capacity = capacity
        self.build_after = build_after
        self.remember = remember  # preambles whose sightings are counted
        self.formats: OrderedDict[str, bytes] = OrderedDict()
        self.sightings: OrderedDict[str, int] = OrderedDict()
        self.failures: dict[str, int] = {}

    def plan(self, document: str) -> tuple[str, Optional[str]]:
        """("plain" | "build" | "cached", preamble key or None) for the next job."""
        key = preamble_key(document) if self.capacity > 0 else None
        if key is None or self.failures.get(key, 0) >= MAX_BUILD_FAILURES:
            return "plain", key
        if key in self.formats:
            self.formats.move_to_end(key)
            return "cached", key
        seen = self.sightings.pop(key, 0) + 1
        self.sightings[key] = seen
        while len(self.sightings) > self.remember:
            self.sightings.popitem(last=False)
        return ("build" if seen >= self.build_after else "plain"), key

    def install(self, key: str, workdir: str) -> None:
        """Write the stored format into a job's directory (mode "cached")."""
        with open(os.path.join(workdir, FORMAT_FILE), "wb") as out:
            out.write(self.formats[key])

    def settle(self, mode: str, key: Optional[str], workdir: str, finished: bool) -> None:
        """After a job planned as `mode`: keep the format a "build" job left; drop a cached one
        the job deleted (its compile failed where the plain one succeeded). A job that did not
        finish (timeout, crash) counts as a failed build and leaves the cache as it was."""
        if mode == "plain" or key is None:
            return
        data = _read_regular(os.path.join(workdir, FORMAT_FILE)) if finished else None
        if data is not None:
            if mode == "build":
                self.formats[key] = data
                self.sightings.pop(key, None)
                while len(self.formats) > self.capacity:
                    self.formats.popitem(last=False)
            return
        self.failures[key] = self.failures.get(key, 0) + 1
        if mode == "cached" and finished:
            self.formats.pop(key, None)


def _read_regular(path: str) -> Optional[bytes]:
    """The bytes of a regular file of sane size, else None (a job may leave a link or a pipe)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or not 0 < info.st_size <= MAX_FORMAT_BYTES:
            return None
        data = handle.read(MAX_FORMAT_BYTES + 1)
    return data if 0 < len(data) <= MAX_FORMAT_BYTES else None
