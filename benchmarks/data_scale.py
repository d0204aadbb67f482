"""How vinci's loader scales with the number of rows: time to the first batch, peak RSS, later batches.

    python -m benchmarks.data_scale                    # 200,000 rows, and 20,000 (N/10)
    python -m benchmarks.data_scale --rows 50000 --validate full

Builds a parquet dataset of N rows laid out as the hub stores one (data/train-0000i-of-0000n.parquet):
ms-swift SFT messages with ``<image>`` and an ``images`` column of embedded PNG bytes (small
images, 16 distinct ones so building is quick; each row still holds its own bytes). Then, for N
and N/10, a fresh process (clean RSS, an empty `datasets` cache, so the parquet -> arrow
conversion is counted) builds `VinciDataModule(stage="sft", train=<folder>)` with the embedded
tiny model's processor, runs ``setup("fit")`` and draws batches from ``train_dataloader()``.

Columns: rows; seconds from the start to the first batch (setup included) and rows/s that
makes; peak RSS of the process, and its growth over the RSS after imports and the processor
load; ms per row of later batches (mean over --batches batches after the first).
Done when (issue 16): first batch grows <= 2x and peak RSS <= 300 MB from N/10 to N.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_rows(folder: Path, n: int, shards: int = 4) -> Path:
    """N SFT rows with embedded PNG bytes, in hub-layout parquet shards; reused when present."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    data = folder / "data"
    stamp = folder / "rows.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == {"rows": n}:
        return folder
    data.mkdir(parents=True, exist_ok=True)
    pngs = []
    for k in range(16):
        buffer = io.BytesIO()
        Image.new("RGB", (48 + 4 * k, 40), (16 * k, 255 - 16 * k, 128)).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    per = -(-n // shards)
    for s in range(shards):
        lo, hi = s * per, min(n, (s + 1) * per)
        messages = [[{"role": "user", "content": "<image>Write the svg code that draws this image."},
                     {"role": "assistant", "content": f"```svg\n<svg id='{i}'><rect width='{i % 97}'/></svg>\n```"}]
                    for i in range(lo, hi)]
        images = [[{"bytes": pngs[i % 16], "path": None}] for i in range(lo, hi)]
        table = pa.table({"messages": messages, "images": images})
        pq.write_table(table, data / f"train-{s:05d}-of-{shards:05d}.parquet", row_group_size=10_000)
    stamp.write_text(json.dumps({"rows": n}))
    return folder


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(folder: str, processor: str, batches: int, validate: str) -> dict:
    """One measurement, in this (fresh) process."""
    start = time.perf_counter()
    from vinci.backbone import load_processor
    from vinci.data.datamodule import VinciDataModule

    dm = VinciDataModule(stage="sft", train=folder, processor=processor, batch_size=8, max_length=1024,
                         validate=validate, min_pixels=56 * 56, max_pixels=224 * 224)
    dm.processor = load_processor(processor)
    base = rss_mb()
    ready = time.perf_counter()
    dm.setup("fit")
    loader = iter(dm.train_dataloader())
    next(loader)
    first = time.perf_counter()
    for _ in range(batches):
        next(loader)
    later = (time.perf_counter() - first) / (batches * 8)
    rows = len(dm.datasets["train"])
    return {"rows": rows, "first_s": first - ready, "imports_s": ready - start, "peak_mb": rss_mb(), "base_mb": base,
            "later_ms": later * 1000}


def measure(folder: Path, processor: str, batches: int, validate: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="vinci-data-scale-") as cache:
        env = {**os.environ, "HF_DATASETS_CACHE": cache, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        code = ("import json, sys; from benchmarks.data_scale import child; "
                f"print('RESULT', json.dumps(child({str(folder)!r}, {processor!r}, {batches}, {validate!r})))")
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"measurement failed:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="N; N/10 is measured too")
    parser.add_argument("--out", default="artifacts/data_scale", help="where the parquet datasets are built (reused)")
    parser.add_argument("--processor", default="artifacts/tiny-vlm", help="model dir whose processor tokenises; built if missing")
    parser.add_argument("--batches", type=int, default=20, help="later batches timed after the first")
    parser.add_argument("--validate", default="lazy", choices=["lazy", "full"], help="the data module's validate mode")
    args = parser.parse_args(argv)

    if not (Path(args.processor) / "config.json").is_file():
        from vinci.tiny import TinySpec, build_tiny_vlm

        build_tiny_vlm(args.processor, TinySpec())
    results = []
    for n in (args.rows // 10, args.rows):
        t = time.perf_counter()
        folder = build_rows(Path(args.out) / f"rows-{n}", n)
        built = time.perf_counter() - t
        result = measure(folder.resolve(), args.processor, args.batches, args.validate)
        results.append({**result, "built_s": built})
    print(f"\nvinci data loader, validate={args.validate}, batch 8, SFT rows with embedded PNGs (hub-layout parquet shards)")
    print(f"{'rows':>9} | {'first batch s':>13} | {'rows/s to 1st':>13} | {'peak RSS MB':>11} | {'RSS growth MB':>13} | {'later ms/row':>12}")
    print("-" * 86)
    for r in results:
        print(f"{r['rows']:>9,} | {r['first_s']:>13.2f} | {r['rows'] / r['first_s']:>13,.0f} | {r['peak_mb']:>11.0f} | "
              f"{r['peak_mb'] - r['base_mb']:>13.0f} | {r['later_ms']:>12.2f}")
    small, big = results
    print(f"\nfrom {small['rows']:,} to {big['rows']:,} rows: first batch x{big['first_s'] / small['first_s']:.2f} "
          f"(done when <= 2), peak RSS +{big['peak_mb'] - small['peak_mb']:.0f} MB (done when <= 300)")


if __name__ == "__main__":
    main()
