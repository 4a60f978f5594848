"""MLflow tracking: a parent run per search, a child run per trial, the final model.

The tracker is a Tune ``Callback``, so it runs on the driver only: one writer, which keeps a
SQLite store safe under any number of concurrent trials, and workers never need MLflow access.
"""

from __future__ import annotations

import math
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from ray.tune import Callback
from ray.tune.stopper import Stopper

import raynas
from raynas.config import METRICS
from raynas.errors import ConfigError
from raynas.estimation.costs import FEASIBLE, VIOLATIONS
from raynas.estimation.fidelity import TIME_ATTR, Fidelity
from raynas.ledger import Ledger
from raynas.mirror import Mirror
from raynas.models import describe
from raynas.report.graph import GRAPHS
from raynas.report.trial import artist, log_structure
from raynas.scalarize import SCALAR
from raynas.space import Space, arch_hash


def tracking_uri(explicit: str | None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``./mlflow.db`` (MLflow's default)."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{Path('mlflow.db').resolve()}"


# MLflow retries a refused request 7 times with exponential backoff (minutes); the ledger
# retries on its own schedule, so a write fails fast while the server is away.
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def connect(uri: str) -> MlflowClient:
    """A client for ``uri``; a one-line ConfigError if the store cannot be reached."""
    if not any(uri.startswith(p) for p in ("sqlite:///", "http://", "https://", "file:",
                                          "postgresql", "mysql", "databricks")) and "://" in uri:
        raise ConfigError(f"--tracking-uri: unsupported scheme in {uri!r}")
    if uri.startswith(("http://", "https://")):
        import requests

        for name, value in FAIL_FAST.items():
            os.environ.setdefault(name, value)

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
        except requests.RequestException as exc:
            raise ConfigError(f"--tracking-uri: MLflow server {uri} is not reachable "
                              f"({type(exc).__name__})") from None
    if not uri.startswith("sqlite:///"):
        return MlflowClient(tracking_uri=uri)
    # The client creates a new SQLite store (schema migrations) when it is made; two searches
    # starting at once on one file would race there, so that is serialised by a file lock.
    import fcntl

    path = Path(uri.removeprefix("sqlite:///"))
    if not path.parent.is_dir():
        raise ConfigError(f"--tracking-uri: {uri}: folder {path.parent} does not exist")
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
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
    """The parent run of one search, and every write under it, through the search's ledger
    (so a tracking outage delays writes instead of losing them). Runs are named by key:
    ``parent``, ``trial/<id>``, ``final``. With a ``mirror`` (remote storage) the search's
    folder is copied there by ``push`` (see ``raynas.mirror``)."""

    mirror: Mirror | None = None  # also for a record pickled before mirrors existed

    def __init__(self, ledger: Ledger, mirror: Mirror | None = None) -> None:
        self.ledger = ledger
        self.mirror = mirror

    def push(self) -> None:
        """Copy the search's folder to its remote storage, if it has one."""
        if self.mirror is not None:
            self.mirror.push(self.ledger.warn)

    @classmethod
    def start(cls, client: MlflowClient, experiment: str, folder: Path, tags: dict[str, str],
              params: dict[str, Any], space_yaml: str,
              warn: Callable[[str], None]) -> SearchRecord:
        """Create the parent run (directly: a store that is down now is a usage error)."""
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        run = client.create_run(experiment_id, tags={**tags, "raynas.folder": str(folder)},
                                run_name=tags.get("raynas.name"))
        record = cls(Ledger.open(folder, client.tracking_uri, experiment_id, warn))
        record.ledger.bind("parent", run.info.run_id)
        record.log_params("parent", params)
        record.ledger.write("text", "parent", text=space_yaml, file="space.yaml")
        return record

    @property
    def run_id(self) -> str:
        return self.ledger.runs["parent"]

    def child(self, key: str, name: str, tags: dict[str, str]) -> None:
        if not self.ledger.has(key):
            self.ledger.write("create", key, name=name, tags=tags)

    def log_params(self, key: str, params: dict[str, Any]) -> None:
        self.ledger.write("params", key, params={k: str(v) for k, v in params.items()})

    def log_metrics(self, key: str, metrics: dict[str, float], step: int) -> None:
        self.ledger.write("metrics", key, metrics={k: float(v) for k, v in metrics.items()},
                          step=step, time=int(time.time() * 1000))

    def tag(self, key: str, tags: dict[str, Any]) -> None:
        self.ledger.write("tags", key, tags={k: str(v) for k, v in tags.items()})

    def log_dict(self, key: str, data: dict, file: str) -> None:
        self.ledger.write("dict", key, data=data, file=file)

    def log_file(self, key: str, name: str, content: bytes) -> None:
        """An artifact kept in the ledger's folder until the store has it; ``name`` may have
        folders (``trial/<id>/architecture.png``), the artifact is named by its last part."""
        (self.ledger.folder / name).parent.mkdir(parents=True, exist_ok=True)
        (self.ledger.folder / name).write_bytes(content)
        self.ledger.write("artifact", key, file=name)

    def end(self, key: str, status: str = "FINISHED") -> None:
        self.ledger.write("end", key, status=status)


def recorded(result: dict) -> dict[str, float]:
    """The metrics of a Tune result that MLflow records: the finite ones of ``METRICS``, and
    the scalar of a scalarised search (a rejected trial reports NaN for what it never had)."""
    return {k: result[k] for k in (*METRICS, SCALAR)
            if isinstance(result.get(k), int | float) and math.isfinite(result[k])}


class MLflowTracker(Callback):
    """Mirrors every Tune trial into a child run: params, per-epoch metrics, status, retries.

    It keeps no state of its own beyond counters for the progress lines: what was written lives
    in the ledger, so a resumed search (whose Tuner unpickles this object) goes on exactly.
    """

    def __init__(self, record: SearchRecord, space: Space, fidelity: Fidelity,
                 progress: Callable[[str], None],
                 arch_metrics: dict[str, dict[str, float]] | None = None) -> None:
        self.record = record
        self.space = space
        self.fidelity = fidelity
        self.progress = progress
        # metrics a strategy knows before training (zero_cost's proxy score), by arch hash
        self.arch_metrics = arch_metrics or {}
        self.done = 0
        self.best: float | None = None

    @property
    def ledger(self) -> Ledger:
        return self.record.ledger

    def setup(self, **info: Any) -> None:
        """At the start of Tune's run: start the actor that draws the trials' diagrams."""
        if self.space.model in GRAPHS:
            artist()

    def get_state(self) -> None:
        """Tune asks for this when it saves its experiment state, after taking its snapshot and
        before uploading it: the search's folder goes to the storage first, so the copy there is
        never older than the Tune state a resume starts from. No state of its own (None: Tune
        saves no callback file)."""
        self.record.push()
        return None

    @property
    def failed(self) -> int:
        return sum(key.startswith("trial/") and status == "FAILED"
                   for key, status in self.ledger.status.items())

    def on_duplicate(self, trial_id: str, digest: str, result: dict) -> None:
        """The strategy proposed an architecture trial ``trial_id`` trained already; its result
        was reused instead of training again."""
        key = f"trial/{trial_id}"
        count = int(self.ledger.tags.get(key, {}).get("raynas.reused", 0)) + 1
        self.record.tag(key, {"raynas.reused": count})

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        key = f"trial/{trial.trial_id}"
        self.ledger.seen.add(key)
        self.ledger.live.add(key)
        if self.ledger.has(key):  # a retried or resumed trial keeps its run
            return
        arch = self.space.decode(trial.config)
        genotype = describe(self.space, arch)
        self.record.child(key, f"trial-{trial.trial_id}", {
            "raynas.trial_id": trial.trial_id, "raynas.arch_hash": arch_hash(arch),
            "raynas.role": "trial", **({"raynas.genotype": genotype} if genotype else {})})
        # params, tags and metrics first: consecutive, the ledger applies them as one batch
        self.record.log_params(key, {f"arch.{k}": v for k, v in self.space.encode(arch).items()})
        if known := self.arch_metrics.get(arch_hash(arch)):
            self.record.log_metrics(key, known, 0)
        log_structure(self.record, key, self.space.model, arch,
                      f"trial {trial.trial_id} ({arch_hash(arch)})")
        self.record.log_dict(key, arch, "architecture.json")

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        key = f"trial/{trial.trial_id}"
        retries = int(self.ledger.tags.get(key, {}).get("raynas.retries", 0)) + 1
        self.record.tag(key, {"raynas.retries": retries})
        self.progress(f"trial {trial.trial_id} failed ({trial_error(trial)}); retry {retries} "
                      "from its last checkpoint")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        key = f"trial/{trial.trial_id}"
        step = int(result.get(TIME_ATTR, 0))
        # A trial restored from a checkpoint (retry, resume) reports again the steps after that
        # checkpoint that were logged already: MLflow keeps the first report of each step.
        if step > self.ledger.last_step.get(key, 0):
            self.record.log_metrics(key, recorded(result), step)
        node = result.get("node_id")
        if node and self.ledger.tags.get(key, {}).get("raynas.node_id") != node:
            self.record.tag(key, {"raynas.node_id": node})  # once, again if it moves
        sizes = {k: v for k, v in recorded(result).items() if k in ("params", "flops")}
        if sizes and "raynas.params" not in self.ledger.tags.get(key, {}):
            # as tags too (once): runs filter and sort by them in the MLflow UI
            self.record.tag(key, {f"raynas.{k}": v for k, v in sizes.items()})
        if "val_accuracy" in recorded(result):
            self.progress(f"trial {trial.trial_id} {self.fidelity.progress(result)} "
                          f"val_accuracy={result['val_accuracy']:.4f}")

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        key = f"trial/{trial.trial_id}"
        result = trial.last_result or {}
        feasible = result.get(FEASIBLE) is not False
        if FEASIBLE in result:  # a search with constraints
            broken = {} if feasible else {"raynas.violations": result[VIOLATIONS]}
            self.record.tag(key, {"raynas.feasible": str(feasible).lower(), **broken})
        rejected = not feasible and not result.get(TIME_ATTR)  # before training (see costs)
        if rejected:  # its costs are all it has
            self.record.log_metrics(key, recorded(result), 0)
        stopped_early = not rejected and result.get(TIME_ATTR, 0) < self.fidelity.max_budget
        if stopped_early:
            self.record.tag(key, {"raynas.stopped_early": "true"})
        self.record.end(key, "KILLED" if stopped_early or rejected else "FINISHED")
        accuracy = result.get("val_accuracy")
        if feasible and accuracy is not None and (self.best is None or accuracy > self.best):
            self.best = accuracy
        what = "stopped early" if stopped_early else "finished"
        if rejected:
            what = f"rejected before training ({result[VIOLATIONS]})"
        elif not feasible:
            what += f", infeasible ({result[VIOLATIONS]})"
        self._finished(trial, what)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        key = f"trial/{trial.trial_id}"
        if not self.ledger.has(key):
            return
        message = trial_error(trial)
        self.record.tag(key, {"raynas.error": message[:5000]})
        self.record.end(key, "FAILED")
        self._finished(trial, f"FAILED: {message}")

    def _finished(self, trial, what: str) -> None:
        self.ledger.live.discard(f"trial/{trial.trial_id}")
        self.done += 1
        best = f"{self.best:.4f}" if self.best is not None else "-"
        self.progress(f"trial {trial.trial_id} {what} [{self.done} done, best "
                      f"val_accuracy {best}]")


class FailureBudget(Stopper):
    """``--max-failed-trials``: end the search once this many trials have failed for good."""

    def __init__(self, tracker: MLflowTracker, limit: int | None) -> None:
        self.tracker, self.limit = tracker, limit

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.limit is not None and self.tracker.failed >= self.limit


def save_final_model(folder: Path, model, example, stem: str = "final") -> dict[str, str]:
    """Keep the retrained model next to the ledger until MLflow has it (see ``Ledger``)."""
    import numpy as np
    import torch

    files = {"model": f"{stem}_model.pt", "example": f"{stem}_example.npy"}
    torch.save(model, folder / files["model"])
    np.save(folder / files["example"], example)
    return files


def log_model_files(client: MlflowClient, run_id: str, folder: Path, args: dict) -> str:
    """Log the retrained model (signature, input example, architecture, space) in ``run_id`` and
    register it under ``args["name"]``; returns its ``models:/name/version`` URI."""
    import mlflow
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    model = torch.load(folder / args["model"], weights_only=False)
    example = np.load(folder / args["example"])
    with torch.no_grad():
        output = model(torch.as_tensor(example)).numpy()
    # log_model exists only in MLflow's fluent API, whose tracking URI is process-wide and is
    # copied to $MLFLOW_TRACKING_URI (inherited by every later subprocess): set it for this
    # block only.
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        with mlflow.start_run(run_id=run_id):
            mlflow.log_dict(args["arch"], "architecture.json")
            mlflow.log_text(args["space_yaml"], "space.yaml")
            mlflow.log_metrics(args["metrics"])
            # Requirements given, not inferred: MLflow infers them by loading the model in a
            # subprocess (~10 s of a search's end), and misses raynas, whose classes it needs.
            info = mlflow.pytorch.log_model(
                model, name="model", signature=infer_signature(example, output),
                input_example=example, registered_model_name=args["name"],
                pip_requirements=[*mlflow.pytorch.get_default_pip_requirements(),
                                  f"raynas=={raynas.__version__}"])
    finally:
        mlflow.set_tracking_uri(before)
    uri = f"models:/{args['name']}/{info.registered_model_version}"
    client.set_tag(run_id, "raynas.model_uri", uri)
    return uri
