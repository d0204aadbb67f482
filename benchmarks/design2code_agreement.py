"""Agreement of vinci's Design2Code scores with Design2Code's own code, the external oracle.

Pairs (generated, reference) are built from the pages in ../shared/corpora/html:
    identical   each page against itself
    text        the first paragraph's text changed
    colour      a style rule recolouring the text of p, li, a, span and headings
    position    a 120 px spacer at the top of the body (every block moves down)
    drop        the first paragraph removed
    other       each page against the next page of the corpus
vinci renders every page and its two recoloured variants in its sandboxed pool and scores
with `vinci.eval.design2code` (block, text, position, colour). Design2Code's
`visual_eval_v3_multi` (a local checkout, `--design2code-dir`) scores the same pairs itself,
pre-processing, recolouring, block finding, merging and matching with its own code.

    python -m benchmarks.design2code_agreement --design2code-dir ~/src/Design2Code --limit 16

`--limit N` takes the N pages with the fewest text-holding tags (at least 3): Design2Code's
search for blocks to merge computes a text similarity for every block pair for every candidate
merge, so a page of a few hundred blocks takes it hours.

Design2Code needs beautifulsoup4, opencv-python-headless and colormath (benchmarks/
requirements.txt). Its code runs with a compatibility shim that changes no logic, printed:
  - screenshots: its `screenshot_single.py` drives Playwright's Chromium (1280x720 viewport,
    full page), which is not installed here; the shim takes the same screenshot with vinci's
    Chromium (`vinci.render.html.Browser`, 1280 px wide, full page), the browser vinci uses;
  - CLIP is left out: `clip` is a stub and the CLIP similarity is 0 (the four scores compared
    do not use it); scikit-learn, imported but unused, is a stub too;
  - `visual_score.py` at the checkout's HEAD does not parse (an `if`/`elif` pair indented 9
    and 12 spaces); the shim re-indents those two lines to the loop body's 8;
  - its `calculate_similarity`, a pure function of the two blocks' texts that the merge search
    calls again for the same texts for every candidate merge, is memoised (same values).
The oracle's pairs are split over `--workers` processes; with `--cache DIR` each pair's oracle
scores are kept there (keyed by Design2Code's code and both pages) and reused, so a larger
`--limit` only runs the new pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT.parent / "shared" / "corpora" / "html"
METRICS = ("d2c_block", "d2c_text", "d2c_position", "d2c_color")
KINDS = ("identical", "text", "colour", "position", "drop", "other")
COLOUR_RULE = "<style>p, li, a, span, h1, h2, h3 { color: #c0392b !important; }</style>"
TEXT_TAG = re.compile(r"<(?:p|h[1-6]|div|span|a|b|li|td|th|button)[\s>]", re.I)
BROKEN_INDENT = ("         if len(predict_blocks) == 0:", "            elif len(original_blocks) == 0:")


def edit(page: str, kind: str) -> Optional[str]:
    if kind == "text":
        out = re.sub(r"(<p\b[^>]*>)(\s*[^<\s][^<]{2,})", r"\1Edited \2", page, count=1)
    elif kind == "colour":
        out = re.sub(r"</head>", COLOUR_RULE + "</head>", page, count=1, flags=re.I)
    elif kind == "position":
        out = re.sub(r"(<body\b[^>]*>)", r'\1<div style="height: 120px"></div>', page, count=1, flags=re.I)
    elif kind == "drop":
        out = re.sub(r"<p\b[^>]*>.*?</p>", "", page, count=1, flags=re.S)
    else:
        return None
    return out if out != page else None


def build_pairs(folder: Path, kinds, limit):
    """([(kind, generated id, reference id)], {id: page})."""
    every = {p.stem: p.read_text(encoding="utf-8", errors="replace") for p in folder.glob("*.html")}
    size = {name: len(TEXT_TAG.findall(page)) for name, page in every.items()}
    names = sorted(sorted((n for n in every if size[n] >= 3), key=lambda n: (size[n], n))[:limit])
    pages = {name: every[name] for name in names}
    pairs = [("identical", name, name) for name in names if "identical" in kinds]
    for kind in ("text", "colour", "position", "drop"):
        for name in names if kind in kinds else ():
            page = edit(pages[name], kind)
            if page is not None:
                pages[f"{name}_{kind}"] = page
                pairs.append((kind, f"{name}_{kind}", name))
    if "other" in kinds:
        pairs += [("other", other, name) for name, other in zip(names, names[1:])]
    return pairs, pages


# ----------------------------------------------------------------------------- vinci


def vinci_blocks(pages: dict[str, str], generated: set[str], reference: set[str], workers: int) -> dict[tuple[str, str], list]:
    """{(id, 'pred' | 'ref'): blocks}, through `vinci.eval.design2code.page_blocks`."""
    from vinci.eval.design2code import page_blocks
    from vinci.render import RenderPool

    gen, ref = sorted(generated), sorted(reference)
    with RenderPool(workers=workers, timeout=60.0) as pool:
        pred_blocks = page_blocks([pages[i] for i in gen], pool, prediction=True)
        ref_blocks = page_blocks([pages[i] for i in ref], pool, prediction=False)
    return {**{(i, "pred"): b for i, b in zip(gen, pred_blocks)}, **{(i, "ref"): b for i, b in zip(ref, ref_blocks)}}


# ----------------------------------------------------------------------------- Design2Code


def oracle_worker(job: Path) -> None:
    """Oracle side, in a subprocess: Design2Code's `visual_eval_v3_multi` on every pair."""
    import io
    from contextlib import redirect_stdout

    from vinci.render.html import Browser
    from vinci.render.options import RenderOptions

    clip = types.ModuleType("clip")
    clip.load = lambda *args, **kwargs: (None, None)  # CLIP is left out
    sklearn = types.ModuleType("sklearn")
    metrics = types.ModuleType("sklearn.metrics")
    pairwise = types.ModuleType("sklearn.metrics.pairwise")
    pairwise.cosine_similarity = None  # imported, never used
    sys.modules.update({"clip": clip, "sklearn": sklearn, "sklearn.metrics": metrics, "sklearn.metrics.pairwise": pairwise})
    spec = json.loads(job.read_text())
    os.chdir(spec["cwd"])  # it calls metrics/screenshot_single.py by a relative path
    from Design2Code.metrics import visual_score

    visual_score.calculate_clip_similarity_with_blocks = lambda *args, **kwargs: 0.0
    similarity, text_similarity = {}, visual_score.calculate_similarity

    def calculate_similarity(block1, block2, max_distance=1.42):  # theirs reads only the texts
        key = (block1["text"], block2["text"])
        if key not in similarity:
            similarity[key] = text_similarity(block1, block2, max_distance)
        return similarity[key]

    visual_score.calculate_similarity = calculate_similarity
    browser, options = Browser(), RenderOptions()
    real_system = os.system

    def system(command: str) -> int:  # the screenshot tool, with vinci's Chromium
        found = re.match(r"python3 \S*screenshot_single\.py --html (\S+) --png (\S+)$", command)
        if not found:
            return real_system(command)
        try:
            image = browser.render(Path(found[1]).read_text(encoding="utf-8", errors="replace"), options, 60.0)
        except Exception as error:  # as theirs: a failed screenshot is a blank page
            print("screenshot failed:", error, file=sys.stderr)
            from PIL import Image

            image = Image.new("RGB", (1280, 960), "white")
        image.save(found[2])
        return 0

    os.system = system
    results = []
    for k, (generated, reference) in enumerate(spec["pairs"]):
        similarity.clear()  # bounded: one pair's texts at a time
        pred, ref = Path(spec["work"]) / f"p{k}.html", Path(spec["work"]) / f"r{k}.html"
        pred.write_text(generated, encoding="utf-8")
        ref.write_text(reference, encoding="utf-8")
        try:
            with redirect_stdout(io.StringIO()):
                _, _, parts = visual_score.visual_eval_v3_multi([[str(pred)], str(ref)])[0]
            results.append(dict(zip(METRICS, map(float, parts[:4]))))
        except Exception as error:
            results.append(dict.fromkeys(METRICS, f"{type(error).__name__}: {error}"[:120]))
        with open(spec["out"], "w") as out:
            json.dump(results, out)
    browser.kill()


def run_oracle(design2code: Path, pages: dict[str, str], pairs, tmp: Path, workers: int, cache: Optional[Path]) -> list[dict]:
    """Design2Code's scores of each pair, from `workers` oracle processes (and `cache`)."""
    import hashlib

    copy = tmp / "d2c"
    shutil.copytree(design2code / "Design2Code", copy / "Design2Code")
    score = copy / "Design2Code" / "metrics" / "visual_score.py"
    source = score.read_text()
    for line in BROKEN_INDENT:
        source = source.replace(line + "\n", "        " + line.lstrip() + "\n")
    score.write_text(source)
    code = source + Path(__file__).read_text()  # their scoring and this shim
    keys = [hashlib.sha256("\0".join((code, pages[g], pages[r])).encode()).hexdigest()[:24] for _, g, r in pairs]
    store = cache / "design2code.json" if cache is not None else None
    known = json.loads(store.read_text()) if store is not None and store.exists() else {}
    todo = [k for k, key in enumerate(keys) if key not in known]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(copy), str(ROOT)]), MPLBACKEND="Agg")
    procs = []
    for w in range(workers):
        mine = todo[w::workers]
        if not mine:
            continue
        (tmp / f"work{w}").mkdir()
        job = tmp / f"job{w}.json"
        job.write_text(json.dumps({
            "cwd": str(copy / "Design2Code"), "work": str(tmp / f"work{w}"), "out": str(tmp / f"scores{w}.json"),
            "pairs": [(pages[pairs[k][1]], pages[pairs[k][2]]) for k in mine],
        }))  # fmt: skip
        cmd = [sys.executable, "-m", "benchmarks.design2code_agreement", "--oracle-worker", str(job)]
        procs.append((mine, w, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)))
    for mine, w, proc in procs:
        proc.wait()
        done = json.loads((tmp / f"scores{w}.json").read_text()) if (tmp / f"scores{w}.json").exists() else []
        for k, result in zip(mine, done):
            known[keys[k]] = result
    if store is not None:
        cache.mkdir(parents=True, exist_ok=True)
        store.write_text(json.dumps(known))
    missing = [k for k in todo if keys[k] not in known]
    if missing:
        raise RuntimeError(f"Design2Code's oracle stopped before {len(missing)} pairs (first: {pairs[missing[0]]})")
    return [known[key] for key in keys]


def table(rows, key=lambda kind: "all") -> list[str]:
    lines = ["| pairs | metric | n | mean abs. diff | max abs. diff | worst pair (vinci / Design2Code) |", "|---|---|---|---|---|---|"]
    for group in sorted({key(r[0]) for r in rows}, key=lambda g: (g != "all", g)):
        for metric in METRICS:
            diffs = [(abs(v[metric] - o[metric]), g, r, v[metric], o[metric]) for kind, g, r, v, o in rows if key(kind) == group and isinstance(o[metric], float)]
            if diffs:
                worst = max(diffs)
                where = f"{worst[1]} vs {worst[2]} ({worst[3]:.3f} / {worst[4]:.3f})" if worst[0] > 0 else "-"
                lines.append(f"| {group} | {metric} | {len(diffs)} | {sum(d[0] for d in diffs) / len(diffs):.4f} | {worst[0]:.4f} | {where} |")
    return lines


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--design2code-dir", type=Path, help="a checkout of github.com/NoviScl/Design2Code")
    parser.add_argument("--pages", type=Path, default=PAGES)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--limit", type=int, default=16, help="the N pages with the fewest text tags (Design2Code's merge search is slow)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dump", type=Path, help="write every pair's scores here as JSON lines")
    parser.add_argument("--cache", type=Path, help="keep Design2Code's score of each pair here and reuse it")
    parser.add_argument("--oracle-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.oracle_worker:
        return oracle_worker(args.oracle_worker)
    if args.design2code_dir is None or not (args.design2code_dir / "Design2Code" / "metrics" / "visual_score.py").is_file():
        parser.error("--design2code-dir must be a Design2Code checkout (with Design2Code/metrics/visual_score.py)")
    from vinci.eval.design2code import design2code_scores

    start = time.time()
    pairs, pages = build_pairs(args.pages, tuple(args.kinds), args.limit)
    blocks = vinci_blocks(pages, {g for _, g, _ in pairs}, {r for _, _, r in pairs}, args.workers)
    rendered = time.time()
    ours = [design2code_scores(blocks[(g, "pred")], blocks[(r, "ref")]) for _, g, r in pairs]
    scored = time.time() - rendered
    print(f"{len(pages)} pages, {len(pairs)} pairs; vinci rendered them ({rendered - start:.0f} s) and scored them "
          f"({scored:.0f} s, {scored / max(len(pairs), 1):.2f} s per pair)")
    with tempfile.TemporaryDirectory(prefix="design2code-agreement-") as tmp:
        theirs = run_oracle(args.design2code_dir.resolve(), pages, pairs, Path(tmp), args.workers, args.cache)
    print(f"Design2Code's code scored them ({time.time() - start:.0f} s); shim: Chromium screenshots, no CLIP, re-indented if/elif")
    rows = [(kind, g, r, v, o) for (kind, g, r), v, o in zip(pairs, ours, theirs)]
    if args.dump:
        with open(args.dump, "w") as f:
            for kind, g, r, v, o in rows:
                f.write(json.dumps({"kind": kind, "generated": g, "reference": r, "vinci": v, "design2code": o}) + "\n")
    errors = sum(not isinstance(o[m], float) for *_, o in rows for m in METRICS)
    print(f"{len(rows)} pairs compared; {errors} scores where Design2Code's code raised (left out)\n")
    print("\n".join(table(rows)))
    print()
    print("\n".join(table(rows, key=lambda kind: kind)[2:]))


if __name__ == "__main__":
    main()
