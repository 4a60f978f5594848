"""A search's Pareto front in MLflow: logged on the parent run, read back for ``raynas pareto``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlflow.exceptions import MlflowException

from raynas.errors import ConfigError
from raynas.objectives.pareto import Objective, pareto_front, pareto_plot
from raynas.report.search import artifact_json
from raynas.tracking.store import connect, tracking_uri


def log_pareto(record: Any, rows: Sequence[dict[str, Any]], objectives: Sequence[Objective]
               ) -> list[dict[str, Any]]:
    """Log the front to the search's parent run as ``pareto.json`` and ``pareto.png``."""
    keep = ("trial_id", "arch_hash", *(m for m, _ in objectives))
    rows = [{k: r[k] for k in keep if k in r} for r in rows]
    front = pareto_front(rows, objectives)
    record.log_dict("parent", {"objectives": [f"{m}:{mode}" for m, mode in objectives],
                               "front": front, "num_trials": len(rows)}, "pareto.json")
    record.log_file("parent", "pareto.png", pareto_plot(rows, front, objectives))
    return front


def load_front(run_id: str, tracking: str | None = None) -> dict[str, Any]:
    """The ``pareto.json`` a multi-objective search logged on its parent run ``run_id``."""
    uri = tracking_uri(tracking)
    client = connect(uri)
    try:
        client.get_run(run_id)
    except MlflowException:
        raise ConfigError(f"RUN_ID: no MLflow run {run_id!r} in {uri}") from None
    return artifact_json(client, run_id, "pareto.json",
                         "not the parent run of a finished multi-objective search")
