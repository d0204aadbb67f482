"""Render LaTeX/TikZ: pdflatex in the job's private directory, then pdftoppm on page one.

Runs inside a job process (its working directory is the private temp dir). As VinciCoder
does, a snippet without `\\documentclass` is wrapped in a standalone tikz/pgfplots preamble
(its `\\usepackage`/`\\usetikzlibrary` lines are moved into the preamble), and an `article`
class is switched to `standalone`. pdflatex runs with `-no-shell-escape -halt-on-error
-interaction=nonstopmode` and kpathsea's paranoid file policy (`openin_any=p`,
`openout_any=p`): `\\write18` does nothing, and absolute or `../` paths can be neither read
(`\\input{/etc/passwd}`) nor written (`\\openout`). pdfinfo checks the page size against the
pixel cap before pdftoppm rasterises it at `RenderOptions.latex_dpi`.

A preamble the worker has seen before is compiled only once (see `texformat`): the job either
builds a format from this document's preamble first (`tex_format="build"`), or finds one the
worker wrote into its directory (`"cached"`), and pdflatex then starts from that format. If
anything about the format fails, the job compiles the plain way, so a format can make a render
faster but never changes whether it succeeds or what it draws.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from typing import Optional

from PIL import Image

from vinci.render.options import RenderOptions
from vinci.render.protocol import on_white
from vinci.render.result import RenderFailure

PREAMBLE = r"""\documentclass[tikz,border=5pt]{standalone}
\usepackage{amsmath,amssymb}
\usepackage{pgfplots}
\pgfplotsset{compat=newest}
\usetikzlibrary{arrows.meta,calc,positioning,shapes,patterns,decorations.pathreplacing,3d}
"""
_PREAMBLE_ONLY = re.compile(r"^\s*\\(usepackage|usetikzlibrary|usepgfplotslibrary)\b.*$", re.M)
_ARTICLE = re.compile(r"\\documentclass\s*(\[[^\]]*\])?\s*\{article\}")
STANDALONE = r"\\documentclass[border=5pt,varwidth=50cm]{standalone}"
TEX_ENV = {"openin_any": "p", "openout_any": "p", "shell_escape": "f"}
PDFLATEX = ["pdflatex", "-no-shell-escape", "-halt-on-error", "-interaction=nonstopmode"]
FORMAT_FILE = "job.fmt"  # a preamble format, built or cached, beside job.tex; pdflatex -fmt=job finds it
# mylatexformat dumps everything before \begin{document}; -jobname=job keeps \jobname as in the compile
INI = ["pdflatex", "-ini", "-no-shell-escape", "-halt-on-error", "-interaction=nonstopmode", "-jobname=job", "&pdflatex", "mylatexformat.ltx"]


def make_document(code: str) -> str:
    """The full document pdflatex compiles for `code`."""
    if "\\documentclass" in code:
        return _ARTICLE.sub(STANDALONE, code, count=1)
    if "\\begin{document}" in code:
        return PREAMBLE + code
    packages = "\n".join(m.group(0).strip() for m in _PREAMBLE_ONLY.finditer(code))
    body = _PREAMBLE_ONLY.sub("", code).strip()
    return f"{PREAMBLE}{packages}\n\\begin{{document}}\n{body}\n\\end{{document}}\n"


def tex_error(log_text: str, terminal: str = "") -> str:
    """The first TeX error in a log, with its input line, as one short line. kpathsea's
    file-policy refusals go to the terminal (stderr), so those are checked first."""
    refused = [
        path.rstrip(".")
        for _, path in re.findall(r"Not (reading from|writing to) (\S+) \(open(?:in|out)_any = p\)", terminal)
        if path != "/dev/null"  # some packages probe /dev/null; harmless
    ]
    if refused:
        return f"access to files outside the job directory is denied ({refused[0]})"
    match = re.search(r"^! (.*)$", log_text, re.M)
    if not match:
        return "pdflatex failed without an error message"
    line = re.search(r"^l\.(\d+)", log_text[match.end() :], re.M)
    where = f" (line {line.group(1)})" if line else ""
    return f"{match.group(1).strip()}{where}"[:300]


def _run(cmd: list[str], deadline: float, what: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **TEX_ENV}
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise RenderFailure("timeout", f"{what} did not start before the deadline")
    try:
        return subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=remaining, env=env
        )
    except subprocess.TimeoutExpired:
        raise RenderFailure("timeout", f"{what} did not finish within the time limit") from None
    except FileNotFoundError:
        raise RenderFailure("unsupported", f"{cmd[0]} is not installed") from None


def _page_size_pts(pdf: str, deadline: float) -> tuple[float, float]:
    info = _run(["pdfinfo", "-f", "1", "-l", "1", pdf], deadline, "pdfinfo")
    match = re.search(rb"Page\s+1 size:\s+([\d.]+) x ([\d.]+) pts", info.stdout) or re.search(
        rb"Page size:\s+([\d.]+) x ([\d.]+) pts", info.stdout
    )
    if match is None:
        raise RenderFailure("crash", "pdfinfo could not read the page size of the PDF")
    return float(match.group(1)), float(match.group(2))


def _build_format(deadline: float) -> Optional[str]:
    """Dump job.tex's preamble into job.fmt (mylatexformat): its digest, or None (and no
    job.fmt) on failure."""
    try:
        done = _run([*INI, "job.tex"], deadline, "pdflatex -ini")
    except RenderFailure:
        done = None
    if done is not None and done.returncode == 0 and os.path.isfile(FORMAT_FILE):
        return _digest(FORMAT_FILE)
    _remove(FORMAT_FILE)
    return None


def _digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _remove(*paths: str) -> None:
    for path in paths:
        if os.path.lexists(path):
            os.remove(path)


def render_latex(code: str, options: RenderOptions, timeout: float, tex_format: str = "plain") -> Image.Image:
    """Compile `code` with pdflatex and rasterise its first page; RGB on white.

    tex_format: "plain" compiles from scratch; "build" first dumps the preamble into job.fmt,
    then compiles from it; "cached" compiles from the job.fmt already in the directory. When
    the compile from a format fails, the plain compile decides; if that one succeeds, job.fmt
    is deleted, which tells the worker that the format was at fault.
    """
    deadline = time.monotonic() + timeout
    with open("job.tex", "w", encoding="utf-8") as tex:
        tex.write(make_document(code))
    built = _build_format(deadline) if tex_format == "build" else None
    if tex_format == "build" and built is None:
        tex_format = "plain"
    if tex_format in ("build", "cached") and os.path.isfile(FORMAT_FILE):
        done = _run([*PDFLATEX, "-fmt=job", "job.tex"], deadline, "pdflatex")
        if done.returncode != 0 or not os.path.exists("job.pdf"):  # the plain compile decides
            _remove("job.pdf")
            done = _run([*PDFLATEX, "job.tex"], deadline, "pdflatex")
            if done.returncode == 0 and os.path.exists("job.pdf"):
                _remove(FORMAT_FILE)  # the format was at fault: this tells the worker to drop it
    else:
        done = _run([*PDFLATEX, "job.tex"], deadline, "pdflatex")
    if built is not None and os.path.isfile(FORMAT_FILE) and _digest(FORMAT_FILE) != built:
        _remove(FORMAT_FILE)  # the body may write files here (\openout): only the dump's own bytes are kept
    log_text = ""
    if os.path.exists("job.log"):
        with open("job.log", encoding="latin-1") as log_file:
            log_text = log_file.read()
    if done.returncode != 0:
        raise RenderFailure("crash", tex_error(log_text, done.stderr.decode(errors="replace")))
    if not os.path.exists("job.pdf"):
        raise RenderFailure("no-output", "pdflatex produced no pages")
    width_pt, height_pt = _page_size_pts("job.pdf", deadline)
    scale = options.latex_dpi / 72.0
    reason = options.check_size(int(width_pt * scale), int(height_pt * scale))
    if reason:
        raise RenderFailure("limit", reason)
    raster = ["pdftoppm", "-png", "-r", str(options.latex_dpi), "-f", "1", "-l", "1", "-singlefile"]
    done = _run([*raster, "job.pdf", "page"], deadline, "pdftoppm")
    if done.returncode != 0 or not os.path.exists("page.png"):
        message = done.stderr.decode(errors="replace").strip()[:200]
        raise RenderFailure("crash", f"pdftoppm failed: {message or done.returncode}")
    with Image.open("page.png") as page:
        return on_white(page)
