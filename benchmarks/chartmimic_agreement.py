"""Agreement of vinci's ChartMimic scores with ChartMimic's own evaluator, the external oracle.

Pairs (generated, reference) are built from the charts in ../shared/corpora/chart:
    identical     each script against itself
    colour        every '#rrggbb' literal complemented and a different default colour cycle
    text          the first title/label string and the first `label=` changed
    type          the first bar<->barh or fill_between->fill_betweenx swapped; else an extra axhline
    family        each script against the next script of the same chart family
vinci traces every script once in its sandboxed render pool and scores the pairs with
`vinci.eval.chartmimic`. ChartMimic's evaluator (a local checkout, `--chartmimic-dir`) logs
every script with its own loggers (`_log_texts` with ticks removed, `_get_chart_types`,
`_log_colors`, `_log_layouts`) and scores each pair with its own `_calculate_metrics`, a fresh
evaluator per pair. Printed: per metric, the mean and the largest absolute difference.

    python -m benchmarks.chartmimic_agreement --chartmimic-dir ~/src/ChartMimic
    python -m benchmarks.chartmimic_agreement --chartmimic-dir DIR --limit 20 --kinds identical family
    python -m benchmarks.chartmimic_agreement --chartmimic-dir DIR --cache /tmp/cm --seeds 16

ChartMimic pins matplotlib 3.8 / numpy 1.26 and needs colormath, squarify, matplotlib-venn,
networkx, scikit-image and python-dotenv (benchmarks/requirements.txt). On newer matplotlib its
code runs with a compatibility shim (a `sitecustomize` on the oracle's PYTHONPATH) that changes
no logic, and the benchmark prints which parts of it were used:
  - `_process_plot_var_args._makeline` is the old name of `_make_line`: the old name is
    provided, and the new one calls whatever the old name holds (ChartMimic's logger);
  - `matplotlib.cm.get_cmap`, removed in 3.9, is put back as vinci's renderer puts it back;
  - its loggers run each script with `os.system("python3 FILE")`; the benchmark runs it in a
    fork of a warm interpreter instead (still a fresh process per script, without paying for
    a new interpreter and its imports each time);
  - numpy >= 2 prints scalars as `np.float64(1.0)`, which ChartMimic's logs (Python literals it
    reads back with eval) cannot hold: numpy's printing is set to its 1.25 style.
ChartMimic thins a colour list longer than 10 in Python's set order, which follows the hash
seed, so on such charts its colour score changes from run to run; vinci scores the expectation
over thinning orders (`vinci.eval.chartmimic`). So the oracle runs with PYTHONHASHSEED=0 for
every script, and again with seeds 1..N-1 (`--seeds N`) for the scripts of pairs with a long
list; its colour score of such a pair is the mean over the N runs. The colour rows are also shown
split by list length, against ChartMimic's seed 0 alone, and for ChartMimic's own spread across
seeds. Colour scores whose exhaustive permutation search (ChartMimic tries every matching)
would exceed 200,000 permutations are left out and counted.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
CHARTS = ROOT.parent / "shared" / "corpora" / "chart"
METRICS = ("text_f1", "type_f1", "color_f1", "layout_f1")
KINDS = ("identical", "colour", "text", "type", "family")
PALETTE = (
    "import matplotlib\n"
    "matplotlib.rcParams['axes.prop_cycle'] = "
    "matplotlib.cycler(color=['#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'])\n"
)
SHIM = '''"""vinci's compatibility shim for ChartMimic's evaluator on matplotlib >= 3.9: no logic changed."""
import os
import matplotlib
import matplotlib.cm as cm
from matplotlib.axes._base import _process_plot_var_args as _P

_used = []
if not hasattr(_P, "_makeline") and hasattr(_P, "_make_line"):
    _new = _P._make_line

    def _makeline(self, *args, **kwargs):
        return _new(self, *args, **kwargs)

    def _make_line(self, *args, **kwargs):  # matplotlib calls this; ChartMimic wraps _makeline
        return _P._makeline(self, *args, **kwargs)

    _P._makeline, _P._make_line = _makeline, _make_line
    _used.append("_makeline")
if not hasattr(cm, "get_cmap"):
    def get_cmap(name=None, lut=None):
        cmap = name
        if not isinstance(cmap, matplotlib.colors.Colormap):
            cmap = matplotlib.colormaps[name or matplotlib.rcParams["image.cmap"]]
        return cmap.resampled(lut) if lut is not None else cmap

    cm.get_cmap = get_cmap
    _used.append("cm.get_cmap")
import numpy as _np

if int(_np.__version__.split(".")[0]) >= 2:  # its logs are Python literals read back with eval()
    _np.set_printoptions(legacy="1.25")  # numpy 2 writes scalars as np.float64(...); 1.x as plain numbers
    _used.append("numpy-scalar-repr")
if _used and os.environ.get("VINCI_SHIM_LOG"):
    with open(os.environ["VINCI_SHIM_LOG"], "a") as _f:
        _f.write(" ".join(_used) + "\\n")
'''


@dataclass
class Pair:
    name: str  # reference chart
    kind: str
    generated: str  # script id
    reference: str  # script id


# ----------------------------------------------------------------------------- pairs


def recolour(code: str) -> Optional[str]:
    return PALETTE + re.sub(r"#([0-9a-fA-F]{6})\b", lambda m: f"#{0xFFFFFF ^ int(m.group(1), 16):06x}", code)


def retext(code: str) -> Optional[str]:
    out = re.sub(r"((?:set_title|title|set_xlabel|xlabel|set_ylabel|ylabel|suptitle)\(\s*[rf]?[\"'])", r"\1Edited ", code, count=1)
    out = re.sub(r"(label\s*=\s*[\"'])", r"\1New ", out, count=1)
    return out if out != code else None


def retype(code: str) -> Optional[str]:
    for old, new in ((".barh(", ".bar("), (".bar(", ".barh("), (".fill_between(", ".fill_betweenx(")):
        if old in code:
            return code.replace(old, new, 1)
    at = code.find("plt.savefig")
    if at < 0:
        return None
    return code[:at] + 'plt.gca().axhline(0.5, color="#ff0000")\n' + code[at:]


EDITS = {"colour": recolour, "text": retext, "type": retype}


def build_pairs(charts: Path, kinds: tuple[str, ...], limit: Optional[int]) -> tuple[list[Pair], dict[str, str]]:
    """(pairs, {script id: code}); a script id is its file stem (its family first, as
    ChartMimic's evaluator looks for 'box' in the reference's file name)."""
    names = sorted(p.stem for p in charts.glob("*.py"))[:limit]
    scripts = {name: (charts / f"{name}.py").read_text() for name in names}
    pairs = [Pair(name, "identical", name, name) for name in names if "identical" in kinds]
    for kind, edit in EDITS.items():
        if kind not in kinds:
            continue
        for name in names:
            code = edit(scripts[name])
            if code is not None:
                scripts[f"{name}__{kind}"] = code
                pairs.append(Pair(name, kind, f"{name}__{kind}", name))
    if "family" in kinds:
        for name, other in zip(names, names[1:]):
            if name.rsplit("_", 1)[0] == other.rsplit("_", 1)[0]:
                pairs.append(Pair(name, "family", other, name))
    return pairs, scripts


# ----------------------------------------------------------------------------- vinci


def vinci_traces(scripts: dict[str, str], workers: int, cache: Optional[Path]) -> dict[str, dict]:
    """{script id: the `chartmimic` part of its trace} for the scripts that rendered. With
    `cache`, traces are kept there keyed by the script and vinci's tracing code."""
    import hashlib

    import vinci.eval.chartmimic_record as record
    import vinci.render.trace as trace
    from vinci.render import RenderJob, RenderPool
    from vinci.render.trace import clean_trace

    tracing = Path(record.__file__).read_text() + Path(trace.__file__).read_text()
    key = {i: hashlib.sha256((tracing + code).encode()).hexdigest()[:20] for i, code in scripts.items()}
    store = cache / "vinci.json" if cache is not None else None
    known = json.loads(store.read_text()) if store is not None and store.exists() else {}
    ids = sorted(i for i in scripts if key[i] not in known)
    with RenderPool(workers=workers, timeout=120.0) as pool:
        results = pool.render_many([RenderJob("python", scripts[i], trace=True) for i in ids])
    for i, r in zip(ids, results):
        known[key[i]] = clean_trace(r.trace)["chartmimic"] if r.ok and r.trace is not None else None
    if store is not None:
        cache.mkdir(parents=True, exist_ok=True)
        store.write_text(json.dumps(known))
    return {i: known[key[i]] for i in scripts if known[key[i]] is not None}


# ----------------------------------------------------------------------------- ChartMimic


def oracle_env(project: Path, shim: Path, log: Path, seed: int = 0) -> dict:
    env = dict(os.environ, PROJECT_PATH=str(project), PYTHONHASHSEED=str(seed), MPLBACKEND="Agg", VINCI_SHIM_LOG=str(log))
    env["PYTHONPATH"] = os.pathsep.join([str(shim), str(project), str(ROOT)])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # their `python3`
    return env


WARM = ("numpy", "pandas", "scipy.stats", "matplotlib.pyplot", "mpl_toolkits.mplot3d", "networkx", "squarify", "matplotlib_venn", "colormath.color_diff")


def forked_system(command: str) -> int:
    """ChartMimic's `os.system("python3 FILE")`, run in a fork of this warm interpreter (a fresh
    process per script, as theirs, without paying for a new interpreter and its imports)."""
    import runpy
    import signal
    import traceback

    parts = command.split()
    if len(parts) != 2 or parts[0] not in ("python", "python3"):
        return subprocess.call(command, shell=True)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            signal.alarm(120)  # a script that hangs counts as one that failed
            sys.argv = [parts[1]]  # their scripts import nothing beside themselves: no search-path change
            runpy.run_path(parts[1], run_name="__main__")
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else 0
        except BaseException:
            traceback.print_exc()
            status = 1
        finally:
            os._exit(status)
    return os.waitpid(pid, 0)[1]


def log_worker(job: Path) -> None:
    """Oracle side, in a subprocess: log every script of a job with ChartMimic's own loggers."""
    import importlib

    for name in WARM:
        importlib.import_module(name)
    os.system = forked_system
    from chart2code.utils.evaluator.chart_type_evaluator import ChartTypeEvaluator
    from chart2code.utils.evaluator.color_evaluator import ColorEvaluator
    from chart2code.utils.evaluator.layout_evaluator import LayoutEvaluator
    from chart2code.utils.evaluator.text_evaluator import TextEvaluator

    spec = json.loads(job.read_text())
    os.chdir(spec["workdir"])  # where the scripts' own savefig lands
    text = TextEvaluator(use_position=False, use_axs=False)  # ChartMimic's settings: ticks removed
    with open(spec["out"], "a") as out:
        for path in spec["files"]:
            logged = {
                "id": Path(path).stem,
                "texts": text._log_texts(path),
                "types": ChartTypeEvaluator()._get_chart_types(path),
                "colors": ColorEvaluator()._log_colors(path),
                "layout": LayoutEvaluator()._log_layouts(path),
            }
            out.write(json.dumps(logged) + "\n")
            out.flush()


SHIM_TOKEN = "{SHIM}"  # a cached log holds the shim's folder as this
MAX_PERMUTATIONS = 200_000  # ChartMimic tries every matching of a drawing function's colours


def search_size(generated: list[str], golden: list[str]) -> float:
    """The largest number of permutations ChartMimic's colour matching tries for one function."""
    from collections import Counter
    from math import perm

    a, b = Counter(c.split("--")[0] for c in generated), Counter(c.split("--")[0] for c in golden)
    return max([perm(max(a[g], b[g]), min(a[g], b[g])) for g in a.keys() & b.keys()], default=0)


def score_worker(job: Path) -> None:
    """Oracle side, in a subprocess: ChartMimic's `_calculate_metrics` on every pair."""
    import copy
    import io
    from contextlib import redirect_stdout

    from chart2code.utils.evaluator.chart_type_evaluator import ChartTypeEvaluator
    from chart2code.utils.evaluator.color_evaluator import ColorEvaluator
    from chart2code.utils.evaluator.layout_evaluator import LayoutEvaluator
    from chart2code.utils.evaluator.text_evaluator import TextEvaluator

    spec = json.loads(job.read_text())
    logged = {row["id"]: row for row in map(json.loads, Path(spec["logged"]).read_text().splitlines())}
    results = []
    for gen, ref in spec["pairs"]:
        row = {}
        if gen not in logged or ref not in logged:
            results.append(dict.fromkeys(METRICS, "not logged"))
            continue
        for metric, cls, part in (
            ("text_f1", lambda: TextEvaluator(use_position=False, use_axs=False), "texts"),
            ("type_f1", ChartTypeEvaluator, "types"),
            ("color_f1", ColorEvaluator, "colors"),
            ("layout_f1", LayoutEvaluator, "layout"),
        ):
            evaluator = cls()
            evaluator.golden_code_file = f"{ref}.py"
            if part == "colors" and (n := search_size(logged[gen][part], logged[ref][part])) > MAX_PERMUTATIONS:
                row[metric] = f"skipped: {n:.2g} permutations"  # its exhaustive search would not finish
                continue
            try:
                with redirect_stdout(io.StringIO()):  # it prints as it goes
                    evaluator._calculate_metrics(copy.deepcopy(logged[gen][part]), copy.deepcopy(logged[ref][part]))
                row[metric] = float(evaluator.metrics["f1"])
            except Exception as error:  # e.g. a reference with no colour divides by zero
                row[metric] = f"{type(error).__name__}: {error}"[:120]
        results.append(row)
    Path(spec["out"]).write_text(json.dumps(results))


def run_oracle(chartmimic: Path, scripts: dict[str, str], pairs: list[Pair], workers: int, tmp: Path, cache: Optional[Path], seed: int = 0):
    """([{metric: score or error}] per pair, shim parts used). With `cache`, ChartMimic's logs
    of a script are kept there, keyed by the script's text, and reused."""
    import hashlib

    project, shim, work = tmp / "chartmimic", tmp / "shim", tmp / "work"
    for part in ("chart2code", "eval_configs"):
        shutil.copytree(chartmimic / part, project / part)
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SHIM)
    work.mkdir()
    for sid, code in scripts.items():
        (work / f"{sid}.py").write_text(code)
    env = oracle_env(project, shim, tmp / "shim.log", seed)
    salt = f"{seed}:" if seed else ""  # seed 0: the key is the script alone
    key = {sid: hashlib.sha256(f"{salt}{code}".encode()).hexdigest()[:20] for sid, code in scripts.items()}
    cached = {}
    if cache is not None and (cache / "logged.jsonl").exists():  # the shim's path is in colour keys
        text = (cache / "logged.jsonl").read_text().replace(SHIM_TOKEN, str(shim))
        cached = {row["key"]: row for row in map(json.loads, text.splitlines())}
    files = sorted(str(work / f"{sid}.py") for sid in scripts if key[sid] not in cached)
    procs = []
    for w in range(workers):
        job = tmp / f"log{w}.json"
        job.write_text(json.dumps({"files": files[w::workers], "workdir": str(work), "out": str(tmp / f"logged{w}.jsonl")}))
        cmd = [sys.executable, "-m", "benchmarks.chartmimic_agreement", "--log-worker", str(job)]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for proc in procs:
        proc.wait()
    fresh = [json.loads(line) for w in range(workers) if (tmp / f"logged{w}.jsonl").exists() for line in (tmp / f"logged{w}.jsonl").read_text().splitlines()]
    for row in fresh:
        row["key"] = key[row["id"]]
        cached[row["key"]] = row
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        rows = "".join(json.dumps(row) + "\n" for row in cached.values())
        (cache / "logged.jsonl").write_text(rows.replace(str(shim), SHIM_TOKEN))
    logged = tmp / "logged.jsonl"
    logged.write_text("".join(json.dumps({**cached[key[sid]], "id": sid}) + "\n" for sid in scripts if key[sid] in cached))
    job = tmp / "score.json"
    job.write_text(json.dumps({"logged": str(logged), "pairs": [(p.generated, p.reference) for p in pairs], "out": str(tmp / "scores.json")}))
    subprocess.run([sys.executable, "-m", "benchmarks.chartmimic_agreement", "--score-worker", str(job)], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    used = sorted(set((tmp / "shim.log").read_text().split())) if (tmp / "shim.log").exists() else []
    return json.loads((tmp / "scores.json").read_text()), used


# ----------------------------------------------------------------------------- report


def table(rows: list[tuple[Pair, dict, dict]], key=lambda pair: "all", metrics=METRICS, sides="vinci / ChartMimic") -> list[str]:
    lines = [f"| pairs | metric | n | mean abs. diff | max abs. diff | worst pair ({sides}) |", "|---|---|---|---|---|---|"]
    groups = sorted({key(p) for p, _, _ in rows}, key=lambda g: (g != "all", g))
    for group in groups:
        for metric in metrics:
            diffs = [
                (abs(v[metric] - o[metric]), p, v[metric], o[metric])
                for p, v, o in rows
                if key(p) == group and isinstance(o[metric], float) and isinstance(v[metric], float)
            ]
            if not diffs:
                continue
            worst = max(diffs, key=lambda d: d[0])
            mean = sum(d[0] for d in diffs) / len(diffs)
            where = f"{worst[1].generated} vs {worst[1].reference} ({worst[2]:.3f} / {worst[3]:.3f})" if worst[0] > 0 else "-"
            lines.append(f"| {group} | {metric} | {len(diffs)} | {mean:.4f} | {worst[0]:.4f} | {where} |")
    return lines


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chartmimic-dir", type=Path, help="a checkout of github.com/ChartMimic/ChartMimic")
    parser.add_argument("--charts", type=Path, default=CHARTS, help="folder of NAME.py chart scripts")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--limit", type=int, default=None, help="only the first N charts")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--log-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--score-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dump", type=Path, help="write every pair's scores here as JSON lines")
    parser.add_argument("--seeds", type=int, default=8, help="hash seeds ChartMimic's long colour lists are scored under (0..N-1)")
    parser.add_argument("--cache", type=Path, help="keep ChartMimic's logs and vinci's traces of each script here and reuse them")
    args = parser.parse_args(argv)
    if args.log_worker:
        return log_worker(args.log_worker)
    if args.score_worker:
        return score_worker(args.score_worker)
    if args.chartmimic_dir is None or not (args.chartmimic_dir / "chart2code" / "utils" / "evaluator").is_dir():
        parser.error("--chartmimic-dir must be a ChartMimic checkout (with chart2code/utils/evaluator)")
    from vinci.eval.chartmimic import THIN_ABOVE, chartmimic_scores

    start = time.time()
    pairs, scripts = build_pairs(args.charts, tuple(args.kinds), args.limit)
    traces = vinci_traces(scripts, args.workers, args.cache)
    print(f"{len(scripts)} scripts, {len(traces)} rendered by vinci, {len(pairs)} pairs ({time.time() - start:.0f} s)")
    with tempfile.TemporaryDirectory(prefix="chartmimic-agreement-") as tmp:
        oracle, used = run_oracle(args.chartmimic_dir.resolve(), scripts, pairs, args.workers, Path(tmp), args.cache, 0)
    print(f"ChartMimic's evaluator ran ({time.time() - start:.0f} s); compatibility shim used: {', '.join(used) or 'none'}")
    long = {sid for sid, part in traces.items() if len(part["colors"]) > THIN_ABOVE}
    thinned = lambda p: "colour lists > 10 (thinned)" if {p.generated, p.reference} & long else "colour lists <= 10"  # noqa: E731
    seeded = oracle_seeds(args, scripts, pairs, oracle, [i for i, p in enumerate(pairs) if {p.generated, p.reference} & long])
    rows, errors = [], 0
    for i, (pair, theirs) in enumerate(zip(pairs, oracle)):
        if pair.generated not in traces or pair.reference not in traces:
            continue  # vinci could not render one side (the program is broken on its own)
        ours = chartmimic_scores(traces[pair.generated], traces[pair.reference])
        errors += sum(not isinstance(theirs[m], float) for m in METRICS)
        rows.append((pair, ours, {**theirs, "color_f1": seeded[i]["mean"]}, seeded[i]))
    if args.dump:
        with open(args.dump, "w") as f:
            for pair, ours, theirs, seeds in rows:
                f.write(json.dumps({"pair": pair.__dict__, "vinci": ours, "chartmimic": theirs, "chartmimic_color_by_seed": seeds["runs"]}) + "\n")
    skipped = sum(str(theirs[m]).startswith("skipped") for _, _, theirs, _ in rows for m in METRICS)
    print(f"{len(rows)} pairs compared; left out: {skipped} colour scores whose exhaustive search exceeds "
          f"{MAX_PERMUTATIONS:,} permutations, {errors - skipped} scores where ChartMimic's evaluator raised\n")
    compared = [(p, ours, theirs) for p, ours, theirs, _ in rows]
    print(f"vinci against ChartMimic (colour with a long list: ChartMimic's mean over hash seeds 0..{args.seeds - 1}):")
    print("\n".join(table(compared)))
    print("\n".join(table(compared, key=thinned, metrics=("color_f1",))[2:]))
    print()
    print("\n".join(table(compared, key=lambda p: p.kind)[2:]))
    long_rows = [(p, ours, seeds) for p, ours, _, seeds in rows if thinned(p) != "colour lists <= 10" and len(seeds["runs"]) == args.seeds]
    if args.seeds > 1 and long_rows:
        print(f"\nPairs with a long colour list, one ChartMimic run against another ({len(long_rows)} pairs):")
        print("| comparison | n | mean abs. diff | max abs. diff | worst pair |\n|---|---|---|---|---|")
        for label, a, b in (
            ("vinci / ChartMimic seed 0", lambda o, s: o["color_f1"], lambda o, s: s["runs"][0]),
            ("ChartMimic seed 0 / seed 1", lambda o, s: s["runs"][0], lambda o, s: s["runs"][1]),
            ("ChartMimic seed 0 / mean", lambda o, s: s["runs"][0], lambda o, s: s["mean"]),
        ):
            diffs = [(abs(a(o, s) - b(o, s)), p) for p, o, s in long_rows]
            worst = max(diffs, key=lambda d: d[0])
            print(f"| {label} | {len(diffs)} | {sum(d for d, _ in diffs) / len(diffs):.4f} | {worst[0]:.4f} | {worst[1].generated} vs {worst[1].reference} |")
        spread = max(((max(s["runs"]) - min(s["runs"]), p) for p, _, s in long_rows), key=lambda d: d[0])
        print(f"largest spread of ChartMimic's own colour score over the {args.seeds} seeds: {spread[0]:.4f} ({spread[1].generated} vs {spread[1].reference})")


def oracle_seeds(args, scripts: dict[str, str], pairs: list[Pair], oracle: list[dict], long_pairs: list[int]) -> list[dict]:
    """Per pair {'runs': ChartMimic's colour score under each hash seed, 'mean': their mean or
    the seed-0 value when it is not a score}; the pairs with a long list are rerun under seeds
    1..N-1 (only their scripts are logged again)."""
    runs = [[theirs["color_f1"]] for theirs in oracle]
    subset = {sid: scripts[sid] for i in long_pairs for sid in (pairs[i].generated, pairs[i].reference)}
    for seed in range(1, args.seeds if long_pairs else 1):
        with tempfile.TemporaryDirectory(prefix="chartmimic-agreement-") as tmp:
            again, _ = run_oracle(args.chartmimic_dir.resolve(), subset, [pairs[i] for i in long_pairs], args.workers, Path(tmp), args.cache, seed)
        for i, theirs in zip(long_pairs, again):
            runs[i].append(theirs["color_f1"])
    out = []
    for values in runs:
        scores = [v for v in values if isinstance(v, float)]
        out.append({"runs": scores, "mean": sum(scores) / len(scores) if len(scores) == len(values) else values[0]})
    return out

if __name__ == "__main__":
    main()
