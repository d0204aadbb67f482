"""Shared fixtures: the real corpora (beside the repository, or the vendored sample), and how a test asks for a system tool.

With CI=true a test whose system tool (browser, TeX, bwrap) is missing fails instead of
skipping, so a CI machine that lost an install step cannot pass by skipping everything.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_CORPORA = ROOT.parent / "shared" / "corpora"  # the larger set, when the repository sits beside it
SAMPLE_CORPORA = ROOT / "tests" / "data" / "corpora"  # a sample of it, vendored with its licences
CORPORA = SHARED_CORPORA if SHARED_CORPORA.is_dir() else SAMPLE_CORPORA
FULL_CORPORA = CORPORA == SHARED_CORPORA  # tests that count inputs expect more of the larger set


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(*names: str) -> None:
    """Skip (locally) or fail (CI=true) when one of the named executables is not on PATH."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        message = f"system tool(s) not installed: {', '.join(missing)} (run `make setup`)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def corpora() -> Path:
    """Real-world charts, pages, icons and TikZ figures: ../shared/corpora, else the sample."""
    return CORPORA


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The embedded tiny VLM, built once per test session into a temporary directory."""
    from vinci.tiny import TinySpec, build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm"), TinySpec(texts_per_language=60))


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A small synthetic corpus in charts and SVG (the fast renderers), both schemas, all splits."""
    from vinci.data.synth import build_corpus

    out = tmp_path_factory.mktemp("synth")
    return build_corpus(out, seed=0, n_train=6, n_val=2, n_test=2, languages=["python", "svg"], refine_fraction=0.5)


FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "idefics3")  # every family vinci claims (vinci.families)


class FamilyModel(NamedTuple):
    name: str  # key of vinci.families.FAMILIES
    path: Path  # its tiny model directory


@pytest.fixture(scope="session")
def family_models(tmp_path_factory):
    """name -> that family's tiny model directory, built on first use, once per test session."""
    from vinci.families import build_family
    from vinci.tiny import TinySpec

    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = build_family(name, tmp_path_factory.mktemp(name), TinySpec(texts_per_language=60))
        return built[name]

    return get


@pytest.fixture(scope="session", params=FAMILIES)
def family_model(request, family_models) -> FamilyModel:
    """Each family's tiny model in turn (tests using it run once per family)."""
    return FamilyModel(request.param, family_models(request.param))
