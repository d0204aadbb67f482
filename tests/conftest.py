"""Shared fixtures: where the real corpora live, and how a test asks for a system tool.

With CI=true a test whose system tool (browser, TeX, bwrap) is missing fails instead of
skipping, so a CI machine that lost an install step cannot pass by skipping everything.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT.parent / "shared" / "corpora"


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
    """The real-world corpora beside the repository (../shared/corpora)."""
    if not CORPORA.is_dir():
        message = f"real corpora not found at {CORPORA}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return CORPORA
