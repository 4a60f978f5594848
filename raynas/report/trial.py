"""What every trial run gets besides its metrics: the architecture's diagram and its structural
facts as tags, so the MLflow UI can show, filter and sort trials by their structure."""

from __future__ import annotations

from typing import Any

import ray

from raynas.report.diagram import draw
from raynas.report.graph import facts, graph_of

DIAGRAM = "architecture.png"


def log_structure(record: Any, key: str, model: str, arch: dict[str, Any], title: str) -> None:
    """Tag ``raynas.depth`` and ``raynas.ops`` on run ``key`` of ``record`` (a
    ``SearchRecord``) and queue its diagram; a builder without a graph function gets neither.

    Drawing takes ~50 ms of Python. On Tune's event loop (this runs in a callback), or in the
    ledger's thread of the driver (holding the GIL against that loop), it was most of what
    raynas added to a trial; so an actor draws it, starting now, and the diagram is a ledger
    write of its own that takes the picture when it is applied (``render``)."""
    if graph_of(model) is None:
        return
    found = facts(graph_of(model)(arch))
    record.tag(key, {"raynas.depth": found["depth"], "raynas.ops": found["ops"]})
    file = f"{key}/{DIAGRAM}"
    if (drawing := _draw_elsewhere(model, arch, title)) is not None:
        _DRAWING[file] = drawing
    record.ledger.write("diagram", key, model=model, arch=arch, title=title, file=file)


def render(model: str, arch: dict[str, Any], title: str, file: str) -> bytes:
    """The PNG of a queued diagram: the actor's, or drawn here (``raynas sync``, a replay)."""
    session, drawing = _DRAWING.pop(file, (None, None))
    if drawing is not None and ray.is_initialized() and session == _session():
        return ray.get(drawing)
    return _draw(model, arch, title)


_DRAWING: dict[str, tuple[str, Any]] = {}  # file -> (Ray session, ObjectRef of its PNG)
_ARTISTS: dict[str, Any] = {}  # Ray session -> its drawing actor


def artist() -> Any:
    """This driver's drawing actor, started on first call (one process, so matplotlib is
    imported once; not a process pool: spawning one re-imports the user's ``__main__``). A
    search calls it when it starts, so that the actor is up before the first trial is."""
    session = _session()
    if session not in _ARTISTS:
        _ARTISTS[session] = ray.remote(num_cpus=0)(_Artist).remote()
    return _ARTISTS[session]


def _draw_elsewhere(model: str, arch: dict[str, Any], title: str) -> tuple[str, Any] | None:
    """(Ray session, the ObjectRef of the PNG drawn by ``artist``); None without Ray."""
    return (_session(), artist().draw.remote(model, arch, title)) if ray.is_initialized() else None


def _session() -> str:
    """This driver's connection to Ray: its node and job (a new local cluster numbers its
    jobs from 1 again)."""
    context = ray.get_runtime_context()
    return f"{context.get_node_id()}:{context.get_job_id()}"


def _draw(model: str, arch: dict[str, Any], title: str) -> bytes:
    return draw(graph_of(model)(arch), title)


class _Artist:
    """The actor's class: unpickling it imports this module, so matplotlib (through
    ``report.diagram``) is imported when the actor starts, before its first drawing."""

    def draw(self, model: str, arch: dict[str, Any], title: str) -> bytes:
        return _draw(model, arch, title)
