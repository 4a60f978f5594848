"""One torch thread (the medical tests' fixture, for the same reason: small convolutions on a
busy 2-core machine run far slower with threads fighting over the cores), and one demo COCO
dataset per session, written by ``raynas.tasks.detection.data.write_synthetic``."""

from __future__ import annotations

from pathlib import Path

import pytest
from medical.conftest import one_thread  # noqa: F401  (autouse: applies here too)

from raynas.tasks.detection.data import write_synthetic


@pytest.fixture(scope="session")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("coco") / "shapes", count=200, size=64)
