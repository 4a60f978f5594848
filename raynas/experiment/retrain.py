"""``raynas retrain``: a search's best architectures, trained to completion with several seeds
and compared on the held-out test split.

A search ranks architectures by validation accuracy after a short budget, and one final
training's test accuracy on a few hundred images moves by a point or more from seed to seed. So
the top-k architectures are retrained on train+val with S seeds each (one Ray task per
architecture x seed, as many at a time as the cluster has CPUs), compared by the mean ± std of
their test accuracy, logged and registered as model versions, and the best mean gets the
registered model alias ``champion``.

The pieces are the search's own: ``estimation.train.retrain`` trains, and every MLflow write goes
through a ledger (``raynas.tracking.ledger``) whose ``model`` op logs and registers a model, so a
tracking outage at the end delays the writes (``raynas sync FOLDER``) instead of losing the
trainings.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import raynas
from raynas.data import load_dataset
from raynas.errors import ConfigError, RaynasError, SpaceError
from raynas.estimation import final_training, load_space
from raynas.estimation.fidelity import Fidelity
from raynas.estimation.train import Retrained, TrialSettings
from raynas.experiment.state import LEDGERS, SearchState
from raynas.runtime import ray_session, stderr
from raynas.space import Space, arch_hash, space_yaml
from raynas.tracking.final_model import save_final_model
from raynas.tracking.session import tracking_session
from raynas.tracking.store import connect, last_line, tracking_uri
from raynas.tracking.tracker import SearchRecord, experiment_of

CHAMPION = "champion"  # the registered model alias of the best retrained architecture
FILE_DATASET = "digits"  # an architecture file's dataset unless --dataset names one


@dataclass(frozen=True)
class Candidate:
    """An architecture to retrain, and what the search measured for it."""

    arch: dict[str, Any]
    val_accuracy: float | None = None  # the search's; None for an architecture file
    trial_id: str | None = None


@dataclass(frozen=True)
class RetrainSource:
    """What to retrain, on which data, and where the results go."""

    space: Space
    dataset: str
    seed: int  # the data split (the search's, so its test split stays unseen) and first seed
    experiment: str
    candidates: list[Candidate]
    search_run_id: str | None = None
    search_experiment_id: str | None = None


@dataclass
class Outcome:
    """One architecture's retraining: a test accuracy per seed, its run and model version."""

    rank: int
    arch: dict[str, Any]
    val_accuracy: float | None
    seeds: list[int]
    test_accuracies: list[float]
    run_id: str
    model_uri: str = "pending"  # models:/NAME/VERSION once MLflow has it

    @property
    def mean(self) -> float:
        return statistics.fmean(self.test_accuracies)

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (0 for a single seed)."""
        return statistics.stdev(self.test_accuracies) if len(self.test_accuracies) > 1 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"rank": self.rank, "arch": self.arch, "arch_hash": arch_hash(self.arch),
                "val_accuracy": self.val_accuracy, "seeds": self.seeds,
                "test_accuracies": self.test_accuracies, "test_accuracy_mean": self.mean,
                "test_accuracy_std": self.std, "logged_seed": self.seeds[0],
                "run_id": self.run_id, "model_uri": self.model_uri}


@dataclass
class RetrainResult:
    experiment: str
    search_run_id: str | None
    dataset: str
    epochs: int
    outcomes: list[Outcome]
    champion: Outcome
    folder: str  # the ledger: ``raynas sync FOLDER`` applies what MLflow did not take yet
    pending: int  # MLflow writes not applied yet

    def to_json(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "search_run_id": self.search_run_id,
                "dataset": self.dataset, "epochs": self.epochs,
                "architectures": [o.to_json() for o in self.outcomes],
                "champion": self.champion.model_uri, "champion_rank": self.champion.rank,
                "folder": self.folder, "pending": self.pending}

    def table(self) -> str:
        """The architectures ranked as the search ranked them, with their test accuracy."""
        seeds = self.outcomes[0].seeds
        lines = [f"{'rank':>4}  {'architecture':<12}  {'search val_acc':>14}  "
                 f"{'test_acc mean ± std':>19}  model"]
        for o in self.outcomes:
            val = f"{o.val_accuracy:.4f}" if o.val_accuracy is not None else "-"
            mark = f"  {CHAMPION}" if o is self.champion else ""
            lines.append(f"{o.rank:>4}  {arch_hash(o.arch):<12}  {val:>14}  "
                         f"{o.mean:>10.4f} ± {o.std:.4f}  {o.model_uri}{mark}")
        lines += [
            f"test accuracy: mean ± sample std over seeds {', '.join(map(str, seeds))}, each "
            f"trained {self.epochs} epochs on train+val of {self.dataset}, tested once on its "
            "held-out test split",
            f"each model version holds the weights of the first seed ({seeds[0]}), chosen "
            "before testing (picking the best seed would bias its test accuracy upwards)",
            f"champion: models:/{self.experiment}@{CHAMPION} -> {self.champion.model_uri} "
            "(the highest mean test accuracy)",
        ]
        if self.pending:
            lines.append(f"MLflow is unreachable: {self.pending} writes wait; run raynas sync "
                         f"{self.folder}")
        return "\n".join(lines)


def retrain_best(target: str, epochs: int, top_k: int = 1, seeds: int = 3, *,
                 dataset: str | None = None, space: str | None = None, seed: int | None = None,
                 tracking: str | None = None, experiment: str | None = None,
                 tracking_wait: float = 120.0,
                 progress: Callable[[str], None] = stderr) -> RetrainResult:
    """Retrain the ``top_k`` best architectures of search run ``target`` (or the architecture
    in the JSON file ``target``) with ``seeds`` seeds each; log, register and rank them."""
    for flag, value in (("epochs", epochs), ("top-k", top_k), ("seeds", seeds)):
        if value < 1:
            raise ConfigError(f"--{flag}: must be >= 1")
    uri = tracking_uri(tracking)
    client = connect(uri)
    source = candidates_of(target, client, top_k=top_k, space=space, dataset=dataset, seed=seed,
                     experiment=experiment)
    data = load_dataset(source.dataset, seed=source.seed)
    train_seeds = [source.seed + i for i in range(seeds)]
    record, keys = _start_runs(client, source, epochs, train_seeds, progress)
    progress(f"retraining {len(keys)} architectures x {seeds} seeds for {epochs} epochs on "
             f"train+val of {data.summary()}; ledger {record.ledger.folder}")
    with tracking_session(record, keys, wait_s=tracking_wait, progress=progress):
        with ray_session(progress=progress):
            trainings = _train(source, data, epochs, train_seeds, progress)
        outcomes = [_log(record, keys[rank - 1], rank, candidate, source,
                         [trainings[rank, s] for s in train_seeds], train_seeds)
                    for rank, candidate in enumerate(source.candidates, start=1)]
        champion = max(outcomes, key=lambda o: o.mean)  # the first of equals: the search's order
        record.ledger.write("alias", keys[champion.rank - 1], alias=CHAMPION)
    for key, outcome in zip(keys, outcomes, strict=True):
        outcome.model_uri = record.ledger.outputs.get(f"{key}:model_uri", "pending")
    return RetrainResult(source.experiment, source.search_run_id, source.dataset, epochs,
                         outcomes, champion, str(record.ledger.folder), record.ledger.pending)


def candidates_of(target: str, client: MlflowClient, *, top_k: int = 1, space: str | None = None,
            dataset: str | None = None, seed: int | None = None,
            experiment: str | None = None) -> RetrainSource:
    """``target`` as an architecture JSON file (an existing path or ``*.json``), else as the
    MLflow run id of a search."""
    path = Path(target).expanduser()
    if path.suffix == ".json" or path.exists():
        if top_k > 1:
            raise ConfigError(f"--top-k {top_k}: an architecture file holds one architecture; "
                              "give a search's run id to retrain its top-k")
        return _from_file(path, space, dataset, seed, experiment)
    if space is not None:
        raise ConfigError("--space: only for an architecture file (a search run has its space)")
    return _from_search(client, target, top_k, dataset, seed, experiment)


def _from_file(path: Path, space: str | None, dataset: str | None, seed: int | None,
               experiment: str | None) -> RetrainSource:
    try:
        arch = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the architecture file "
                          f"({exc.strerror or type(exc).__name__})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a JSON architecture ({exc})") from None
    if not isinstance(arch, dict):
        raise ConfigError(f"{path}: an architecture is a JSON object, got a "
                          f"{type(arch).__name__}")
    name = space or arch.get("space")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"--space: required, {path} does not name its space")
    loaded = load_space(name)
    try:  # encode + decode: checks every field and adds the space's name, as a search does
        arch = loaded.decode(loaded.encode(arch))
    except SpaceError as exc:
        raise SpaceError(f"{path}: {exc}") from None
    return RetrainSource(loaded, dataset or FILE_DATASET, 0 if seed is None else seed,
                  experiment or loaded.name, [Candidate(arch)])


def _from_search(client: MlflowClient, run_id: str, top_k: int, dataset: str | None,
                 seed: int | None, experiment: str | None) -> RetrainSource:
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise ConfigError(f"{run_id}: neither an architecture file nor an MLflow run in "
                          f"{client.tracking_uri} ({last_line(exc.message)})") from None
    tags = run.data.tags
    if tags.get("raynas.role") != "search":
        parent = tags.get("mlflow.parentRunId")
        raise ConfigError(f"run {run_id} is not a raynas search (raynas.role="
                          f"{tags.get('raynas.role', 'unset')})"
                          + (f"; its search is run {parent}" if parent else ""))
    loaded = load_space(yaml.safe_load(_artifact_text(client, run_id, "space.yaml")))
    trials = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}' and "
        "tags.`raynas.role` = 'trial'", max_results=50_000)
    ranked = sorted((t for t in trials if t.info.status != "FAILED"
                     and "val_accuracy" in t.data.metrics),
                    key=lambda t: -t.data.metrics["val_accuracy"])
    chosen: dict[str, Any] = {}  # arch hash -> its best trial run (a duplicate adds nothing)
    for trial in ranked:
        chosen.setdefault(trial.data.tags.get("raynas.arch_hash", trial.info.run_id), trial)
    if not chosen:
        raise ConfigError(f"run {run_id}: the search has no finished trial to retrain")
    candidates = [Candidate(loaded.validate(json.loads(_artifact_text(
                      client, t.info.run_id, "architecture.json"))),
                      t.data.metrics["val_accuracy"], t.data.tags.get("raynas.trial_id"))
                  for t in list(chosen.values())[:top_k]]
    return RetrainSource(loaded, dataset or tags.get("raynas.dataset", FILE_DATASET),
                  int(tags.get("raynas.seed", 0)) if seed is None else seed,
                  experiment or client.get_experiment(run.info.experiment_id).name, candidates,
                  run_id, run.info.experiment_id)


def _artifact_text(client: MlflowClient, run_id: str, path: str) -> str:
    with tempfile.TemporaryDirectory() as folder:
        try:
            return Path(client.download_artifacts(run_id, path, folder)).read_text()
        except (MlflowException, OSError):
            raise ConfigError(f"run {run_id}: its artifact {path} cannot be read") from None


def _start_runs(client: MlflowClient, source: RetrainSource, epochs: int, seeds: list[int],
                progress: Callable[[str], None]) -> tuple[SearchRecord, list[str]]:
    """A run per architecture (created now: the store answered a moment ago), in a ledger
    folder that ``raynas sync`` understands; the rest is written through the ledger."""
    name = f"{source.experiment}-retrain-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    folder = (LEDGERS / name).resolve()
    experiment_id = experiment_of(client, source.experiment)
    record = SearchRecord.open(folder, client.tracking_uri, experiment_id, progress)
    SearchState(str(folder), client.tracking_uri, experiment_id, role="retrain").save()
    linked = {"raynas.search_run_id": source.search_run_id} if source.search_run_id else {}
    if source.search_run_id and source.search_experiment_id == experiment_id:
        linked["mlflow.parentRunId"] = source.search_run_id  # nested under it in the UI
    keys = []
    for rank, candidate in enumerate(source.candidates, start=1):
        digest = arch_hash(candidate.arch)
        run = client.create_run(experiment_id, run_name=f"retrain-{rank}-{digest}", tags={
            "raynas.role": "retrain", "raynas.rank": str(rank), "raynas.arch_hash": digest,
            "raynas.space": source.space.name, "raynas.dataset": source.dataset,
            "raynas.seed": str(source.seed), "raynas.logged_seed": str(seeds[0]),
            "raynas.folder": str(folder), "raynas.version": raynas.__version__, **linked,
            **({"raynas.trial_id": candidate.trial_id} if candidate.trial_id else {})})
        key = f"retrain/{rank}"
        record.ledger.bind(key, run.info.run_id)
        record.log_params(key, {"epochs": epochs, "seeds": ",".join(map(str, seeds)),
                                "dataset": source.dataset, **{
                                    f"arch.{k}": v
                                    for k, v in source.space.encode(candidate.arch).items()}})
        keys.append(key)
    return record, keys


def _train(source: RetrainSource, data: Any, epochs: int, seeds: list[int],
           progress: Callable[[str], None]) -> dict[tuple[int, int], Retrained]:
    """Every architecture x seed as a Ray task of one CPU; results as they finish."""
    data_ref = ray.put(data)  # once, not once per task
    task = ray.remote(final_training(data)).options(num_cpus=1)
    running = {task.remote(source.space, candidate.arch, data_ref, epochs,
                           TrialSettings(Fidelity(epochs), seed)): (rank, seed)
               for rank, candidate in enumerate(source.candidates, start=1) for seed in seeds}
    done: dict[tuple[int, int], Retrained] = {}
    while running:
        [ref], _ = ray.wait(list(running), num_returns=1)
        rank, seed = running.pop(ref)
        try:
            done[rank, seed] = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            for other in running:
                ray.cancel(other)
            raise RaynasError(f"architecture {rank} ({arch_hash(source.candidates[rank - 1].arch)}"
                              f"), seed {seed}: training failed: {last_line(str(exc))}") from None
        scores = ", ".join(f"test_{k} {v:.4f}" for k, v in done[rank, seed].test_scores.items()
                           if k != "accuracy")  # e.g. the loss, a detector's mAP@.5 (map_50)
        progress(f"architecture {rank} seed {seed}: test_accuracy "
                 f"{done[rank, seed].test_accuracy:.4f} ({scores}) "
                 f"[{len(done)}/{len(done) + len(running)} trainings done]")
    return done


def _log(record: SearchRecord, key: str, rank: int, candidate: Candidate, source: RetrainSource,
         runs: list[Retrained], seeds: list[int]) -> Outcome:
    """The first seed's model (picked before testing) with every seed's test accuracy."""
    outcome = Outcome(rank, candidate.arch, candidate.val_accuracy, seeds,
                      [r.test_accuracy for r in runs], record.ledger.runs[key])
    first = runs[0]
    for epoch, loss in enumerate(first.train_loss, start=1):
        record.log_metrics(key, {"train_loss": loss}, epoch)
    metrics = {**first.metrics(), "test_accuracy_mean": outcome.mean,
               "test_accuracy_std": outcome.std,
               **{f"test_accuracy_seed_{s}": a
                  for s, a in zip(seeds, outcome.test_accuracies, strict=True)}}
    if candidate.val_accuracy is not None:
        metrics["search_val_accuracy"] = candidate.val_accuracy
    files = save_final_model(record.ledger.folder, first.model, first.example,
                             key.replace("/", "-"))
    record.ledger.write("model", key, **files, name=source.experiment, arch=candidate.arch,
                        space_yaml=space_yaml(source.space), metrics=metrics)
    return outcome
