"""MLflow tracking: a parent run per search, a child run per trial, the final model.

The tracker is a Tune ``Callback``, so it runs on the driver only: one writer, which keeps a
SQLite store safe under any number of concurrent trials, and workers never need MLflow access.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

import raynas
from raynas.errors import ConfigError
from raynas.estimation.fidelity import TIME_ATTR, Fidelity
from raynas.space import Space, arch_hash

TRIAL_METRICS = ("val_accuracy", "val_loss", "train_loss", "params", "flops", "data_fraction",
                 "lr")
MAX_BATCH = 100  # MLflow's log_batch limit on params per call


def tracking_uri(explicit: str | None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``./mlflow.db`` (MLflow's default)."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{Path('mlflow.db').resolve()}"


def connect(uri: str) -> MlflowClient:
    """A client for ``uri``; a one-line ConfigError if the store cannot be reached."""
    if not any(uri.startswith(p) for p in ("sqlite:///", "http://", "https://", "file:",
                                          "postgresql", "mysql", "databricks")) and "://" in uri:
        raise ConfigError(f"--tracking-uri: unsupported scheme in {uri!r}")
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
        except requests.RequestException as exc:
            raise ConfigError(f"--tracking-uri: MLflow server {uri} is not reachable "
                              f"({type(exc).__name__})") from None
    return MlflowClient(tracking_uri=uri)


def ui_command(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri}"


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(raynas.__file__).parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _chunks(items: list, size: int = MAX_BATCH):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def last_line(traceback: str) -> str:
    """The last non-empty line of a traceback: ``ExceptionType: message``."""
    lines = [line.strip() for line in traceback.splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def trial_error(trial) -> str:
    """A failed trial's error, from its local error file: ``Trial.get_error`` reads the storage
    copy, which is only synced after the callbacks have run."""
    path = trial.error_file
    return last_line(Path(path).read_text() if path and Path(path).exists() else "")


class SearchRecord:
    """The parent run of one search, and the child runs under it."""

    def __init__(self, client: MlflowClient, experiment: str, tags: dict[str, str],
                 params: dict[str, Any], space_yaml: str) -> None:
        self.client = client
        found = client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        run = client.create_run(self.experiment_id, tags=tags, run_name=tags.get("raynas.name"))
        self.run_id = run.info.run_id
        self.log_params(self.run_id, params)
        client.log_text(self.run_id, space_yaml, "space.yaml")

    def child(self, name: str, tags: dict[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={"mlflow.parentRunId": self.run_id, **tags})
        return run.info.run_id

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        items = [Param(k, str(v)) for k, v in params.items()]
        for chunk in _chunks(items):
            self.client.log_batch(run_id, params=chunk)

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(run_id, metrics=batch)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


class MLflowTracker(Callback):
    """Mirrors every Tune trial into a child run: params, per-epoch metrics, status."""

    def __init__(self, record: SearchRecord, space: Space, fidelity: Fidelity,
                 progress: Callable[[str], None]) -> None:
        self.record = record
        self.space = space
        self.fidelity = fidelity
        self.progress = progress
        self.runs: dict[str, str] = {}
        self.done = 0
        self.best: float | None = None
        self.reuses: dict[str, int] = {}  # trial id -> times its result was reused
        self.nodes: dict[str, str] = {}  # trial id -> the Ray node it trains on

    def on_duplicate(self, trial_id: str, digest: str, result: dict) -> None:
        """The strategy proposed an architecture trial ``trial_id`` trained already; its result
        was reused instead of training again. Counted here, written once at the end."""
        self.reuses[trial_id] = self.reuses.get(trial_id, 0) + 1

    def on_experiment_end(self, trials: list, **info) -> None:
        for trial_id, count in self.reuses.items():
            if trial_id in self.runs:
                self.record.client.set_tag(self.runs[trial_id], "raynas.reused", str(count))
        total = sum(self.reuses.values())
        self.record.log_metrics(self.record.run_id, {"num_duplicates": total}, 0)
        if total:
            self.progress(f"{total} re-proposed architectures answered from earlier results "
                          f"(not trained again; tag raynas.reused on those trials)")

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        if trial.trial_id in self.runs:  # a restarted trial keeps its run
            return
        arch = self.space.decode(trial.config)
        run_id = self.record.child(f"trial-{trial.trial_id}", {
            "raynas.trial_id": trial.trial_id, "raynas.arch_hash": arch_hash(arch),
            "raynas.role": "trial"})
        self.runs[trial.trial_id] = run_id
        self.record.log_params(run_id, {f"arch.{k}": v for k, v in self.space.encode(arch).items()})
        self.record.client.log_dict(run_id, arch, "architecture.json")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        metrics = {k: result[k] for k in TRIAL_METRICS if k in result}
        self.record.log_metrics(self.runs[trial.trial_id], metrics, int(result.get(TIME_ATTR, 0)))
        node = result.get("node_id")
        if node and self.nodes.get(trial.trial_id) != node:  # tagged once, again if it moves
            self.nodes[trial.trial_id] = node
            self.record.client.set_tag(self.runs[trial.trial_id], "raynas.node_id", node)
        if "val_accuracy" in result:
            self.progress(f"trial {trial.trial_id} {self.fidelity.progress(result)} "
                          f"val_accuracy={result['val_accuracy']:.4f}")

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        result = trial.last_result or {}
        stopped_early = result.get(TIME_ATTR, 0) < self.fidelity.max_budget
        self.record.client.set_terminated(self.runs[trial.trial_id],
                                          "KILLED" if stopped_early else "FINISHED")
        if stopped_early:
            self.record.client.set_tag(self.runs[trial.trial_id], "raynas.stopped_early", "true")
        accuracy = result.get("val_accuracy")
        if accuracy is not None and (self.best is None or accuracy > self.best):
            self.best = accuracy
        self._finished(trial, "stopped early" if stopped_early else "finished")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        run_id = self.runs.get(trial.trial_id)
        if run_id is None:
            return
        message = trial_error(trial)
        self.record.client.log_batch(run_id, tags=[RunTag("raynas.error", message[:5000])])
        self.record.client.set_terminated(run_id, "FAILED")
        self._finished(trial, f"FAILED: {message}")

    def _finished(self, trial, what: str) -> None:
        self.done += 1
        best = f"{self.best:.4f}" if self.best is not None else "-"
        self.progress(f"trial {trial.trial_id} {what} [{self.done} done, best "
                      f"val_accuracy {best}]")


def log_final_model(record: SearchRecord, run_id: str, name: str, model, arch: dict,
                    space_yaml: str, example, metrics: dict[str, float]) -> str:
    """Log the retrained model (signature, input example, architecture, space) in ``run_id`` and
    register it under ``name``; returns its ``models:/name/version`` URI."""
    import mlflow
    import torch
    from mlflow.models import infer_signature

    with torch.no_grad():
        output = model(torch.as_tensor(example)).numpy()
    mlflow.set_tracking_uri(record.client.tracking_uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_dict(arch, "architecture.json")
        mlflow.log_text(space_yaml, "space.yaml")
        mlflow.log_metrics(metrics)
        info = mlflow.pytorch.log_model(model, name="model",
                                        signature=infer_signature(example, output),
                                        input_example=example, registered_model_name=name)
    uri = f"models:/{name}/{info.registered_model_version}"
    record.client.set_tag(run_id, "raynas.model_uri", uri)
    return uri
