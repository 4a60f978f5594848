"""MLflow tracking: a parent run per search, a child run per trial, the final model.

The tracker is a Tune ``Callback``, so it runs on the driver only: one writer, which keeps a
SQLite store safe under any number of concurrent trials, and workers never need MLflow access.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from ray.tune import Callback
from ray.tune.stopper import Stopper

from raynas.config import TIME_ATTR
from raynas.models import describe
from raynas.objectives.constraints import FEASIBLE, VIOLATIONS
from raynas.objectives.metrics import families, known
from raynas.objectives.scalarize import SCALAR
from raynas.report.graph import graph_of
from raynas.report.trial import artist, log_structure
from raynas.space import Space, arch_hash
from raynas.tracking.ledger import Ledger
from raynas.tracking.mirror import Mirror
from raynas.tracking.store import trial_error


class Fidelity(Protocol):
    """What the tracker reads of a search's fidelity (``raynas.estimation.fidelity.Fidelity``,
    a layer above): the full budget, and a trial's progress as text."""

    max_budget: int

    def progress(self, result: dict) -> str: ...


def experiment_of(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created if missing. Two searches that start at once may
    both find it missing; the one whose create the store refuses takes the other's."""
    found = client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        if (found := client.get_experiment_by_name(name)) is None:
            raise
        return found.experiment_id


class SearchRecord:
    """The parent run of one search, and every write under it, through the search's ledger
    (so a tracking outage delays writes instead of losing them). Runs are named by key:
    ``parent``, ``trial/<id>``, ``final``. With a ``mirror`` (remote storage) the search's
    folder is copied there by ``push`` (see ``raynas.tracking.mirror``)."""

    mirror: Mirror | None = None  # also for a record pickled before mirrors existed
    gave_up = False  # a settle waited for MLflow in vain (see ``settle``)

    def __init__(self, ledger: Ledger, mirror: Mirror | None = None) -> None:
        self.ledger = ledger
        self.mirror = mirror

    @classmethod
    def open(cls, folder: str | Path, tracking_uri: str, experiment_id: str,
             warn: Callable[[str], None], mirror: Mirror | None = None) -> SearchRecord:
        """The record of the ledger in ``folder`` (new or written before: a resume, a
        specialisation of a trained supernet, ``raynas sync``)."""
        return cls(Ledger.open(folder, tracking_uri, experiment_id, warn), mirror)

    def push(self) -> None:
        """Copy the search's folder to its remote storage, if it has one."""
        if self.mirror is not None:
            self.mirror.push(self.ledger.warn)

    def settle(self, wait_s: float) -> int:
        """Apply the pending writes, waiting up to ``wait_s`` for an unreachable store - once:
        after a settle that waited in vain the next one tries without waiting - and copy the
        folder to its storage. Returns how many writes still wait (``raynas sync``)."""
        pending = self.ledger.flush(wait_s=0 if self.gave_up else wait_s)
        self.gave_up = pending > 0
        self.push()
        return pending

    @classmethod
    def start(cls, client: MlflowClient, experiment: str, folder: Path, tags: dict[str, str],
              params: dict[str, Any], space_yaml: str,
              warn: Callable[[str], None]) -> SearchRecord:
        """Create the parent run (directly: a store that is down now is a usage error)."""
        experiment_id = experiment_of(client, experiment)
        run = client.create_run(experiment_id, tags={**tags, "raynas.folder": str(folder)},
                                run_name=tags.get("raynas.name"))
        record = cls.open(folder, client.tracking_uri, experiment_id, warn)
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
    family = [k for k in result if k.startswith(families())]
    return {k: result[k] for k in (*known(), SCALAR, *family)
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
        if graph_of(self.space.model) is not None:
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

    def on_stopped(self, trial_id: str, reason: str, why: str) -> None:
        """A rule outside the scheduler stopped the trial (``NotLearning``): say why in MLflow
        and in the progress lines."""
        self.record.tag(f"trial/{trial_id}", {"raynas.stopped_by": reason,
                                               "raynas.stopped_why": why[:5000]})
        self.progress(f"trial {trial_id} stopped ({reason}): {why}")

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
        if by := result.get("stopped_by"):  # the trial stopped itself (an epoch overran)
            self.record.tag(key, {"raynas.stopped_by": by})
        self.record.end(key, "KILLED" if stopped_early or rejected else "FINISHED")
        accuracy = result.get("val_accuracy")
        if feasible and accuracy is not None and (self.best is None or accuracy > self.best):
            self.best = accuracy
        what = "stopped early" if stopped_early else "finished"
        if result.get("stopped_by"):
            what = f"stopped ({result['stopped_by']}: {result[VIOLATIONS]})"
        elif rejected:
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




