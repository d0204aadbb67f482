"""Screenshot the top of a predictions folder's report.html (for the README).

    python -m benchmarks.report_screenshot --dir runs/predict/chart            # -> runs/predict/chart/report.png
    python -m benchmarks.report_screenshot --dir runs/predict --width 1280 --height 1600 --out docs/report.png

The report is opened from disk in the same headless Chromium the HTML renderer uses
(`vinci.render.html.Browser`: fresh profile, no network) and the first width x height CSS
pixels are captured at device scale 1. A folder with predictions.jsonl but no report.html
gets its report written first.
"""

from __future__ import annotations

import argparse
import base64
import tempfile
import time
from pathlib import Path

from vinci.eval.records import PREDICTIONS_FILE, read_predictions
from vinci.eval.report import REPORT_FILE, write_report


def ensure_report(folder: Path) -> Path:
    """folder/report.html, written from folder/predictions.jsonl when it is missing."""
    report = folder / REPORT_FILE
    if not report.is_file():
        predictions = folder / PREDICTIONS_FILE
        if not predictions.is_file():
            raise SystemExit(f"{folder} has neither {REPORT_FILE} nor {PREDICTIONS_FILE}")
        write_report(read_predictions(predictions), folder)
    return report


def screenshot(report: Path, out: Path, width: int = 1280, height: int = 1600) -> Path:
    """PNG of the top width x height pixels of the page at `report`."""
    from vinci.render.html import Browser
    from vinci.render.options import RenderOptions

    with tempfile.TemporaryDirectory(prefix="report-shot-") as root:
        browser = Browser(root=root)
        try:
            browser.start(RenderOptions(html_width=width, html_height=height))
            driver = browser.driver
            metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
            driver.get(report.resolve().as_uri())
            shot = driver.execute_cdp_cmd(
                "Page.captureScreenshot",
                {"format": "png", "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}},
            )
        finally:
            browser.kill()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(shot["data"]))
    return out


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, type=Path, help="predictions folder (report.html or predictions.jsonl)")
    parser.add_argument("--out", type=Path, default=None, help="PNG to write; default DIR/report.png")
    parser.add_argument("--width", type=int, default=1280, help="viewport width in CSS pixels")
    parser.add_argument("--height", type=int, default=1600, help="viewport height in CSS pixels")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report = ensure_report(args.dir)
    out = screenshot(report, args.out or args.dir / "report.png", args.width, args.height)
    print(f"| report | screenshot | size | seconds |\n|---|---|---|---|\n"
          f"| {report} | {out} | {args.width}x{args.height} | {time.perf_counter() - started:.1f} |")
    return out


if __name__ == "__main__":
    main()
