"""Render the real corpora two ways in one run and compare: vinci's pool against the naive way.

    python -m benchmarks.render_throughput                  # all charts/icons/figures, 40 pages
    python -m benchmarks.render_throughput --html 118 --workers 2

Naive, one item at a time, as reward code usually does it:
- chart: a fresh `python` process per script (capturing the figure with the same code as
  the pool, so the images can be compared);
- html:  a fresh Chromium + chromedriver per page (same flags and screenshot code);
- svg:   `cairosvg.svg2png` in this process, then PIL decodes the PNG;
- latex: `pdflatex` then `pdftoppm` per figure in a fresh temporary directory.
vinci: one warm `RenderPool` (start-up reported separately, not counted in renders/s).
Prints renders/s both ways, the ratio, how many images are pixel-identical between the two
ways (among items both rendered), and the success rate of each domain.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from vinci.render import RenderJob, RenderOptions, RenderPool

ROOT = Path(__file__).resolve().parents[1]

CORPORA = ROOT.parent / "shared" / "corpora"
CHART_RUNNER = (
    "import sys\nfrom vinci.render.python import render_python\nfrom vinci.render.options import RenderOptions\n"
    "render_python(open(sys.argv[1]).read(), RenderOptions()).save(sys.argv[2])"
)


def naive_chart(path: Path, options: RenderOptions):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.png"
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0",
               "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}  # fmt: skip
        run = subprocess.run([sys.executable, "-c", CHART_RUNNER, str(path), str(out)], cwd=tmp, env=env,
                             capture_output=True, timeout=120)  # fmt: skip
        if run.returncode != 0 or not out.exists():
            return None
        return Image.open(out).convert("RGB")


def naive_svg(path: Path, options: RenderOptions):
    import cairosvg

    try:
        png = cairosvg.svg2png(bytestring=path.read_bytes(), background_color="white")
    except Exception:  # a failed naive render is counted, not raised
        return None
    return Image.open(io.BytesIO(png)).convert("RGB")


def naive_latex(path: Path, options: RenderOptions):
    from vinci.render.latex import TEX_ENV, make_document

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "job.tex").write_text(make_document(path.read_text()))
        env = {**os.environ, **TEX_ENV, "SOURCE_DATE_EPOCH": "0", "FORCE_SOURCE_DATE": "1"}
        tex = ["pdflatex", "-no-shell-escape", "-halt-on-error", "-interaction=nonstopmode", "job.tex"]
        try:
            subprocess.run(tex, cwd=tmp, env=env, capture_output=True, timeout=60, check=True)
            raster = ["pdftoppm", "-png", "-r", str(options.latex_dpi), "-f", "1", "-l", "1", "-singlefile"]
            subprocess.run([*raster, "job.pdf", "page"], cwd=tmp, capture_output=True, timeout=60, check=True)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            return None
        return Image.open(Path(tmp, "page.png")).convert("RGB")


def naive_html(path: Path, options: RenderOptions):
    from vinci.render.html import Browser
    from vinci.render.result import RenderFailure

    browser = Browser()
    try:
        browser.start(options)
        return browser.render(path.read_text(errors="replace"), options, 20.0)
    except RenderFailure:
        return None
    finally:
        browser.quit()


DOMAINS = {  # name: (language, folder, pattern, naive renderer, per-job timeout)
    "chart": ("python", "chart", "*.py", naive_chart, 60.0),
    "svg": ("svg", "svg", "*.svg", naive_svg, 20.0),
    "latex": ("latex", "tikz", "*.tex", naive_latex, 60.0),
    "html": ("html", "html", "*.html", naive_html, 20.0),
}


def measure(name: str, files: list[Path], pool: RenderPool, options: RenderOptions) -> dict:
    language, _, _, naive, timeout = DOMAINS[name]
    started = time.perf_counter()
    naive_images = [naive(f, options) for f in files]
    naive_s = time.perf_counter() - started
    jobs = [RenderJob(language, f.read_text(errors="replace"), timeout) for f in files]
    started = time.perf_counter()
    results = pool.render_many(jobs)
    pool_s = time.perf_counter() - started
    both = [(a, r.image) for a, r in zip(naive_images, results) if a is not None and r.ok]
    identical = sum(a.size == b.size and a.tobytes() == b.tobytes() for a, b in both)
    return {
        "domain": name, "n": len(files), "naive_rps": len(files) / naive_s, "pool_rps": len(files) / pool_s,
        "identical": f"{identical}/{len(both)}", "pool_ok": sum(r.ok for r in results) / len(files),
        "naive_ok": sum(a is not None for a in naive_images) / len(files),
    }  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="pool workers per kind (default 2)")
    parser.add_argument("--html", type=int, default=40, help="web pages to render (default 40; naive is slow)")
    parser.add_argument("--limit", type=int, default=0, help="cap on items per other domain (0: all)")
    parser.add_argument("--domains", default="chart,svg,latex,html")
    args = parser.parse_args(argv)
    options = RenderOptions()
    started = time.perf_counter()
    with RenderPool(workers=args.workers) as pool:
        warm = [RenderJob(lang, code) for lang, code in (("python", "import matplotlib.pyplot as plt\nplt.plot([1])"),
                ("svg", "<svg xmlns='http://www.w3.org/2000/svg' width='4' height='4'/>"),
                ("latex", r"\begin{tikzpicture}\draw (0,0) -- (1,1);\end{tikzpicture}"), ("html", "<p>warm</p>"))]  # fmt: skip
        pool.render_many(warm * args.workers)
        startup = time.perf_counter() - started
        rows = []
        for name in args.domains.split(","):
            _, folder, pattern, _, _ = DOMAINS[name]
            files = sorted((CORPORA / folder).glob(pattern))
            cap = args.html if name == "html" else args.limit
            files = files[:cap] if cap else files
            rows.append(measure(name, files, pool, options))
    print(f"pool start-up (all worker kinds warm): {startup:.1f}s, {args.workers} workers per kind, {os.cpu_count()} CPUs")
    print(f"{'domain':7s} {'items':>5s} {'naive/s':>8s} {'pool/s':>8s} {'ratio':>6s} {'identical':>10s} {'pool ok':>8s} {'naive ok':>8s}")
    for r in rows:
        ratio = r["pool_rps"] / r["naive_rps"]
        print(f"{r['domain']:7s} {r['n']:5d} {r['naive_rps']:8.2f} {r['pool_rps']:8.2f} {ratio:5.1f}x {r['identical']:>10s} "
              f"{r['pool_ok']:8.1%} {r['naive_ok']:8.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
