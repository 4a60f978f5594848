"""What every trial run gets besides its metrics: the architecture's diagram and its structural
facts as tags, so the MLflow UI can show, filter and sort trials by their structure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from raynas.report.graph import GRAPHS, facts


def log_structure(record: Any, key: str, model: str, arch: dict[str, Any], title: str,
                  warn: Callable[[str], None]) -> None:
    """Tag ``raynas.depth`` and ``raynas.ops`` on run ``key`` of ``record`` (a
    ``SearchRecord``) and log its ``architecture.png``. A builder without a graph function gets
    neither; a drawing that fails only warns (this runs in a callback on Tune's driver, where
    raising would end the search)."""
    if model not in GRAPHS:
        return
    panels = GRAPHS[model](arch)
    found = facts(panels)
    record.tag(key, {"raynas.depth": found["depth"], "raynas.ops": found["ops"]})
    try:
        from raynas.report.diagram import draw

        png = draw(panels, title)
    except Exception as exc:  # noqa: BLE001 - a missing picture must not stop a search
        warn(f"warning: no diagram for {key} ({type(exc).__name__}: {exc})")
        return
    record.log_file(key, f"{key}/architecture.png", png)
