"""Soak test: 1,000 mixed renders (hostile ones included) through one pool.

    python -m benchmarks.render_soak                 # 1,000 renders, 2 workers per kind
    python -m benchmarks.render_soak --renders 200

Reports the outcome kinds, the memory (PSS, so shared pages are not counted twice) of the
pool process and of each worker kind once every kind is warm and again at the end, and counts zombie and orphan processes during and after the
run: a hostile job that forked `setsid` sleepers must leave none of them alive. It also reports
the open file descriptors of the browser workers (Chromium restarts after hung pages must not
leak them) and the host's shared memory (Shmem in /proc/meminfo: tmpfs files, which a job's
leftovers would grow), warm and at the end; both should be flat.
"""

from __future__ import annotations

import argparse
import collections
import random
import time
from pathlib import Path

import psutil

from vinci.render import RenderJob, RenderPool

ROOT = Path(__file__).resolve().parents[1]

CORPORA = ROOT.parent / "shared" / "corpora"
MARKER = "4321.5"  # sleep argument that marks processes forked by hostile jobs
CHART = "import matplotlib.pyplot as plt\nplt.figure(figsize=(3, 2))\nplt.bar(range({n}), range({n}))\nplt.title('{n}')\n"
HOSTILE = [
    ("python", "while True:\n    pass\n", 1.0),
    ("python", "block = bytearray(40 * 2**30)\n", 3.0),
    ("python", "import os\nfor _ in range(50):\n    if os.fork() == 0:\n        os.setsid()\n"
               f"        os.execv('/bin/sleep', ['sleep', '{MARKER}'])\n" + CHART.format(n=3), 5.0),
    ("python", "import ctypes\nctypes.string_at(0)\n", 3.0),
    ("python", "while True:\n    print('x' * 1000)\n", 3.0),
    ("python", "import sys\nsys.exit(0)\n", 3.0),
    ("python", "open('/etc/vinci-soak', 'w').write('x')\n", 3.0),
    ("svg", '<?xml version="1.0"?><!DOCTYPE s [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
            '<svg xmlns="http://www.w3.org/2000/svg"><text>&b;</text></svg>', 3.0),
    ("svg", '<svg xmlns="http://www.w3.org/2000/svg" width="200000" height="200000"/>', 3.0),
    ("html", "<script>alert(1); window.open('x'); print();</script><p>dialogs</p>", 5.0),
    ("html", "<script>while (true) {}</script>", 2.0),
    ("latex", r"\def\x{\x}\x", 1.0),
    ("latex", r"\documentclass{article}\begin{document}\input{/etc/passwd}\end{document}", 5.0),
]  # fmt: skip


def normal_jobs() -> list[tuple[str, str, float]]:
    icons = sorted((CORPORA / "svg").glob("*.svg"))[:200]
    jobs = [("python", CHART.format(n=n), 10.0) for n in range(2, 12)]
    jobs += [("svg", icon.read_text(), 5.0) for icon in icons]
    jobs += [("latex", rf"\begin{{tikzpicture}}\draw (0,0) circle ({r});\end{{tikzpicture}}", 10.0) for r in (1, 2)]
    jobs += [("html", f"<h1>page {n}</h1><p style='height:{n}00px'>x</p>", 10.0) for n in range(1, 6)]
    return jobs


def memory_mb(pids: list[int]) -> dict[str, float]:
    """PSS (shared pages split fairly) of this process and of each worker kind's processes."""
    totals: collections.Counter = collections.Counter()
    totals["pool process"] = psutil.Process().memory_full_info().pss / 2**20
    for pid in pids:
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
            kind = next((a.split("--kind ", 1)[1].split()[0] for p in tree for a in [" ".join(p.cmdline())] if "--kind " in a), "?")
            for proc in tree:
                totals[kind] += proc.memory_full_info().pss / 2**20
        except psutil.NoSuchProcess:
            continue
    return dict(totals)


def browser_fds(pids: list[int]) -> int:
    """Open fds of the browser worker processes (the python side holding the WebDriver link)."""
    total = 0
    for pid in pids:
        try:
            for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
                if "--kind browser" in " ".join(proc.cmdline()) and proc.name().startswith("python"):
                    total += proc.num_fds()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def shmem_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Shmem:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def zombies() -> int:
    return sum(1 for p in psutil.Process().children(recursive=True) if p.status() == psutil.STATUS_ZOMBIE)


def orphans() -> int:
    return sum(1 for p in psutil.process_iter(["cmdline"]) if MARKER in " ".join(p.info["cmdline"] or []))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--renders", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--hostile", type=float, default=0.12, help="fraction of hostile jobs (default 0.12)")
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args(argv)
    rng = random.Random(0)
    normal = normal_jobs()
    picks = [rng.choice(HOSTILE) if rng.random() < args.hostile else rng.choice(normal) for _ in range(args.renders)]
    kinds: collections.Counter = collections.Counter()
    worst_zombies = worst_orphans = 0
    started = time.perf_counter()
    with RenderPool(workers=args.workers) as pool:
        warm = [RenderJob(lang, code, 10.0) for lang, code, _ in normal[:: max(1, len(normal) // 40)]]
        warm += [RenderJob("html", "<p>warm</p>"), RenderJob("latex", normal[-6][1]), RenderJob("svg", normal[20][1])]
        pool.render_many(warm * args.workers)  # every worker kind started and warm
        first = memory_mb(pool.worker_pids())
        fds_warm, shm_warm = browser_fds(pool.worker_pids()), shmem_mb()
        for start in range(0, len(picks), args.batch):
            batch = [RenderJob(lang, code, timeout) for lang, code, timeout in picks[start : start + args.batch]]
            for result in pool.render_many(batch):
                kinds[result.kind or "ok"] += 1
            worst_zombies = max(worst_zombies, zombies())
            worst_orphans = max(worst_orphans, orphans())
        last = memory_mb(pool.worker_pids())
        fds_end, shm_end = browser_fds(pool.worker_pids()), shmem_mb()
        workers = len(pool.worker_pids())
    wall = time.perf_counter() - started
    left = len(psutil.Process().children(recursive=True))
    print(f"{args.renders} renders ({sum(1 for p in picks if p in HOSTILE)} hostile) in {wall:.0f}s, "
          f"{workers} worker processes alive at the end")  # fmt: skip
    print("outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(kinds.items())))
    print(f"{'memory (PSS, MiB)':18s} {'warm':>7s} {'end':>7s} {'growth':>7s}")
    for name in sorted(set(first) | set(last)):
        a, b = first.get(name, 0.0), last.get(name, 0.0)
        print(f"{name:18s} {a:7.0f} {b:7.0f} {b - a:+7.0f}")
    print(f"{'total':18s} {sum(first.values()):7.0f} {sum(last.values()):7.0f} {sum(last.values()) - sum(first.values()):+7.0f}")
    print(f"browser worker fds: warm {fds_warm}, end {fds_end} ({fds_end - fds_warm:+d})")
    print(f"host shared memory (Shmem, MiB): warm {shm_warm:.0f}, end {shm_end:.0f} ({shm_end - shm_warm:+.0f})")
    print(f"zombies (max seen after any batch): {worst_zombies}; orphaned sleepers (max seen): {worst_orphans}")
    print(f"processes left after close: {left}; sleepers left: {orphans()}")


if __name__ == "__main__":
    main()
