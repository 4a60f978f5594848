"""What every trial run gets besides its metrics: the architecture's diagram and its structural
facts as tags, so the MLflow UI can show, filter and sort trials by their structure."""

from __future__ import annotations

from typing import Any

from raynas.report.graph import GRAPHS, facts

DIAGRAM = "architecture.png"


def log_structure(record: Any, key: str, model: str, arch: dict[str, Any], title: str) -> None:
    """Tag ``raynas.depth`` and ``raynas.ops`` on run ``key`` of ``record`` (a
    ``SearchRecord``) and queue its diagram; a builder without a graph function gets neither.

    The diagram is a ledger write of its own, drawn when the ledger applies it, in the ledger's
    background thread: drawing takes ~0.1 s, which on Tune's event loop (this runs in a
    callback) was most of what raynas added to each trial."""
    if model not in GRAPHS:
        return
    found = facts(GRAPHS[model](arch))
    record.tag(key, {"raynas.depth": found["depth"], "raynas.ops": found["ops"]})
    record.ledger.write("diagram", key, model=model, arch=arch, title=title,
                        file=f"{key}/{DIAGRAM}")


def render(model: str, arch: dict[str, Any], title: str) -> bytes:
    """The PNG of ``arch``'s diagram; while Ray is up, drawn by an actor of its own: drawing is
    ~50 ms of Python, and in the driver's ledger thread it would hold the GIL against Tune's
    event loop (measured: half of what raynas added per trial). (Not a process pool: spawning
    one re-imports the user's ``__main__``.)"""
    import ray

    if not ray.is_initialized():  # e.g. raynas sync
        return _draw(model, arch, title)
    job = ray.get_runtime_context().get_job_id()
    if job not in _ARTISTS:
        _ARTISTS[job] = ray.remote(num_cpus=0)(_Artist).remote()
    return ray.get(_ARTISTS[job].draw.remote(model, arch, title))


def _draw(model: str, arch: dict[str, Any], title: str) -> bytes:
    from raynas.report.diagram import draw

    return draw(GRAPHS[model](arch), title)


_ARTISTS: dict[str, Any] = {}  # Ray job id -> its drawing actor


class _Artist:
    def draw(self, model: str, arch: dict[str, Any], title: str) -> bytes:
        return _draw(model, arch, title)
