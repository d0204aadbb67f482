"""One evaluated sample, as `predict` writes it to predictions.jsonl and the report shows it."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from PIL import Image

from vinci.eval.chart_f1 import SCORE_KEYS as CHART_KEYS
from vinci.eval.design2code import SCORE_KEYS as PAGE_KEYS

SCORE_NAMES = ("reward", "visual", "format", "render", "ssim") + CHART_KEYS + PAGE_KEYS  # every score a sample may have
PREDICTIONS_FILE = "predictions.jsonl"
RENDERS_DIR = "renders"  # render PNGs at their rendered size, one per id
REFERENCES_DIR = "references"  # reference PNGs as the model saw them (fitted to max_pixels), one per id


@dataclass
class Prediction:
    id: str  # unique within a run and safe as a file name, e.g. "CB_1" or "rl_test-row12"
    source: str  # where the prompt came from: "chart/CB_1.py" or "rl_test.jsonl:row 12"
    language: str  # canonical: python | svg | html | latex
    prompt: str  # the user text, with its "<image>" placeholder
    text: str  # everything the model generated
    code: Optional[str]  # the extracted fenced block, None when there is none
    scores: dict[str, float] = field(default_factory=dict)  # names from SCORE_NAMES; chart F1s only for python, d2c_* only for html
    render_error: Optional[str] = None  # why the code did not render (or "no fenced python block")
    render_path: Optional[str] = None  # PNG of the render, relative to the output folder
    reference_path: Optional[str] = None  # PNG of the reference image, relative to the output folder
    render: Optional[Image.Image] = field(default=None, repr=False, compare=False)  # in memory only
    reference: Optional[Image.Image] = field(default=None, repr=False, compare=False)  # in memory only

    def to_json(self) -> str:
        record = asdict(self)
        record.pop("render")
        record.pop("reference")
        return json.dumps(record, ensure_ascii=True)  # ASCII escapes: a lone surrogate from a hostile program stays writable

    @classmethod
    def from_json(cls, line: str) -> "Prediction":
        return cls(**json.loads(line))

    def save_images(self, out_dir: str | Path) -> "Prediction":
        """Write the in-memory images as `renders/ID.png` and `references/ID.png` under
        out_dir, set `render_path`/`reference_path` to them (relative), and drop the images
        from memory. Returns self."""
        for image_attr, path_attr, folder in (
            ("render", "render_path", RENDERS_DIR),
            ("reference", "reference_path", REFERENCES_DIR),
        ):
            image = getattr(self, image_attr)
            if image is None:
                continue
            relative = f"{folder}/{safe_id(self.id)}.png"
            target = Path(out_dir) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            image.save(target, format="PNG")
            setattr(self, path_attr, relative)
            setattr(self, image_attr, None)
        return self


def safe_id(text: str) -> str:
    """A file-name-safe id: anything but letters, digits, '-', '_' and '.' becomes '_'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "sample"


def read_predictions(path: str | Path) -> list[Prediction]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [Prediction.from_json(line) for line in lines if line.strip()]
