"""What tests read back from MLflow about a search they ran."""

from __future__ import annotations

from typing import Any

from mlflow.tracking import MlflowClient


def child_runs(client: MlflowClient, result: Any, role: str = "trial") -> list[Any]:
    """The runs of ``role`` (trial, final, supernet, ...) under a search's parent run."""
    exp = client.get_experiment_by_name(result.experiment)
    return client.search_runs(
        [exp.experiment_id],
        f"tags.mlflow.parentRunId = '{result.parent_run_id}' and tags.`raynas.role` = '{role}'",
        max_results=1000)
