"""Fixtures for the evaluation tests: the shared SpaceNet metric reference data."""

from __future__ import annotations

from pathlib import Path

import pytest

REFERENCE_DIR = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "spacenet_metric_reference"
)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The SpaceNet metric reference folder; skips the test when it is not available."""
    if not (REFERENCE_DIR / "MANIFEST.txt").is_file():
        pytest.skip(f"SpaceNet metric reference data not found at {REFERENCE_DIR}")
    return REFERENCE_DIR
