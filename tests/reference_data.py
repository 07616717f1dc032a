"""Where the read-only reference data (``../shared``) lives.

Tests that need it skip with a reason when it is absent, so the project's own tests still pass
for a user who only has the repository.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DARKCSP_SHARED", REPO.parent / "shared"))
ORACLE = SHARED / "oracle"
CFG_CORPUS = SHARED / "darknet-cfgs"
YOLOV3_TINY = SHARED / "models" / "yolov3-tiny"
IMAGES = SHARED / "images"


def require(path: Path) -> Path:
    """``path`` if it exists, else skip the test with the reason."""
    if not path.exists():
        pytest.skip(f"reference data {path} is not present (it ships beside the repo as "
                    "../shared)")
    return path


def oracle_cases() -> list[str]:
    """Names of the synthetic Darknet oracle cases (empty without ../shared)."""
    if not ORACLE.is_dir():
        return []
    return sorted(p.name for p in ORACLE.iterdir()
                  if (p / "model.cfg").is_file() and (p / "out.npz").is_file())
