"""Shared fixtures: where the real traces live, and skipping when they are absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("NETFLOWGEN_REAL_DATA", REPO_ROOT.parent / "shared" / "data" / "real"))

os.environ.setdefault("NETFLOWGEN_QUIET", "1")


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Folder of real public traces (../shared/data/real); skips the test when it is absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real traces not found at {REAL_DATA} (set NETFLOWGEN_REAL_DATA); "
                    "they are not shipped with the repository")
    return REAL_DATA
