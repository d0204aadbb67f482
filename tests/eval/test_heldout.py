"""benchmarks/heldout.py: answers render with the options the reference images were rendered with."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.heldout import reference_render_options  # noqa: E402
from vinci.data.synth.corpus import MANIFEST, VERSION  # noqa: E402


def test_render_options_come_from_the_corpus_manifest(tmp_path):
    rows = tmp_path / "rl_test.jsonl"
    rows.write_text("")
    assert reference_render_options(rows) is None  # rows outside a corpus: the renderers' defaults
    (tmp_path / MANIFEST).write_text(json.dumps({"version": VERSION, "render_options": {"python_dpi": 50}}))
    assert reference_render_options(rows).python_dpi == 50


def test_a_manifest_of_another_corpus_version_is_an_error_not_the_defaults(tmp_path):
    rows = tmp_path / "rl_test.jsonl"
    rows.write_text("")
    (tmp_path / MANIFEST).write_text(json.dumps({"version": VERSION - 1, "render_options": {"python_dpi": 50}}))
    with pytest.raises(ValueError, match=r"manifest\.json is not a version-\d+ corpus manifest.*rebuild the corpus"):
        reference_render_options(rows)
