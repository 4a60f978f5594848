"""Once-for-All end to end: ``raynas ofa train`` (one elastic supernet, progressive shrinking,
recorded in MLflow) and ``raynas specialize RUN --constraint ...`` (a sub-network per target,
found without training anything).

Layout in MLflow: the supernet's run (``raynas.role=ofa``) holds ``space.yaml`` and the trained
weights (``supernet.pt``); its child ``supernet`` has the per-epoch metrics; each
specialisation is another child (``raynas.role=specialize``) whose sub-network is logged and
registered as its own model, ``<experiment>-<target>`` (one version per specialisation), which
``raynas export`` takes like any final model.

Specialising: sample sub-networks, measure their inherited validation accuracy (BatchNorm
re-estimated for each), fit an accuracy predictor on them (the ensemble of small MLPs of
``strategies.predictor``, on its encoding of the space's decisions; the samples are kept on the
supernet's run, so later targets reuse them), then run regularized evolution
(``strategies.evolution``) over the sub-networks, scored by the predictor, a candidate that
breaks a constraint rejected before it is scored (latency from the latency lookup table,
params and FLOPs counted, peak memory measured). The best-scored sub-network whose measured
costs meet the target (the latency table under-predicts a whole network; the next-best is tried
when one misses) is extracted stand-alone, BatchNorm re-estimated, evaluated once on the test
split, logged and registered.
"""

from __future__ import annotations

import io
import json
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from mlflow.exceptions import MlflowException
from ray import tune

import raynas
from raynas.data import Dataset, load_dataset
from raynas.errors import ConfigError, RaynasError
from raynas.estimation import load_space
from raynas.estimation.costs import PREDICTED_LATENCY, CostSettings, measure
from raynas.estimation.fidelity import Fidelity
from raynas.estimation.oneshot import SupernetTracker, evaluate, fit_stage, recalibrate
from raynas.estimation.train import TrialSettings, tensors
from raynas.experiment.state import LEDGERS, SearchState, folder_of, storage_of
from raynas.objectives.constraints import FEASIBLE, VIOLATIONS, Constraint, parse_constraints
from raynas.ofa.shrinking import (
    BATCH_SIZE,
    BN_BATCHES,
    CHECKPOINT,
    KD_RATIO,
    batch_size,
    inherited_accuracy,
    learning_rate,
    load_supernet,
    ofa_trial,
    progress_line,
)
from raynas.ofa.supernets import elastic_model, supernet_of
from raynas.runtime import ray_session, stderr
from raynas.space import Arch, Space, arch_hash, space_yaml
from raynas.strategies.base import one_thread
from raynas.strategies.evolution import RegularizedEvolution
from raynas.strategies.predictor import Encoder, Ensemble
from raynas.tracking.final_model import save_final_model
from raynas.tracking.session import tracking_session
from raynas.tracking.store import connect, last_line, tracking_uri
from raynas.tracking.tracker import SearchRecord

ROLE = "ofa"
SUPERNET_FILE = "supernet.pt"
SAMPLES_FILE = "predictor_samples.json"
COST_METRICS = ("latency_ms", "flops", "params", "peak_memory_mb")
CONFIRM_TRIES = 20  # sub-networks measured, best-scored first, until one meets the target
TRAINED_METRICS = ("train_loss", "kd_loss", "val_accuracy", "val_accuracy_smallest", "phase")
HOLDOUT = 0.2  # share of the predictor's samples held out to measure its RMSE
PREDICTOR_STEPS = 300  # Adam steps of the predictor's fit (the searchers' 100 underfit here)


@dataclass
class TrainedSupernet:
    run_id: str
    experiment: str
    folder: str
    epochs: int
    val_accuracy: float  # the largest sub-network's, inherited weights, BatchNorm re-estimated
    val_accuracy_smallest: float
    seconds: float
    pending: int  # MLflow writes not applied yet (``raynas sync FOLDER``)


def train_elastic_supernet(dataset: str = "digits", epochs_per_phase: int = 3, *,
                           space: str = "ofa_mbv3", seed: int = 0,
                           experiment: str | None = None, tracking: str | None = None,
                           storage: str | None = None, cpus: float = 1.0, gpus: float = 0.0,
                           address: str | None = None,
                           progress: Callable[[str], None] = stderr) -> TrainedSupernet:
    """Train an elastic supernet of ``space`` on ``dataset`` by progressive shrinking, as a
    Tune trial, and record it (metrics per epoch, the weights) in a new MLflow run."""
    started = time.perf_counter()
    if epochs_per_phase < 1:
        raise ConfigError("--epochs-per-phase: must be >= 1")
    loaded = load_space(space)
    elastic_model(loaded)
    data = load_dataset(dataset, seed=seed)
    # built once here so that a space or data it cannot take fails before Ray starts
    supernet = supernet_of(loaded, data.input_shape, data.num_classes)
    phases = list(supernet.PHASES)
    client = connect(tracking_uri(tracking))
    name = f"ofa-{loaded.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    base = storage_of(storage)
    if "://" in base:
        raise ConfigError("--storage: Once-for-All trains on a local storage path")
    folder = folder_of(base, name).resolve()
    experiment = experiment or loaded.name
    epochs = len(phases) * epochs_per_phase
    tags = {"raynas.role": ROLE, "raynas.name": name, "raynas.space": loaded.name,
            "raynas.dataset": dataset, "raynas.seed": str(seed),
            "raynas.version": raynas.__version__}
    params = {"dataset": dataset, "space": loaded.name, "seed": seed,
              "epochs_per_phase": epochs_per_phase, "phases": ",".join(phases)}
    with ray_session(address, progress), tracking_session(SearchRecord.start(
            client, experiment, folder, tags, params, space_yaml(loaded), progress),
            progress=progress) as record:
        SearchState(str(folder), client.tracking_uri, record.ledger.experiment_id,
                    role=ROLE).save()
        progress(f"Once-for-All: run {record.run_id} (experiment {experiment}), folder {folder}")
        settings = TrialSettings(Fidelity(epochs), seed, cpus, gpus)
        trainable = tune.with_resources(
            tune.with_parameters(ofa_trial, space=loaded, data=data, settings=settings,
                                 epochs_per_phase=epochs_per_phase), {"cpu": cpus, "gpu": gpus})
        tracker = SupernetTracker(record, epochs, progress, TRAINED_METRICS,
                                  progress_line(epochs, phases),
                                  {**{f"lr_{p}": learning_rate(supernet, p) for p in phases},
                                   "batch_size": batch_size(len(data.x_train)),
                                   "kd_ratio": KD_RATIO})
        result = fit_stage(trainable, str(folder / "supernet"),
                           {"epochs_per_phase": epochs_per_phase}, tracker,
                           lambda: progress(f"progressive shrinking: {', '.join(phases)}, "
                                            f"{epochs_per_phase} epochs each"))
        if result.error or result.checkpoint is None:
            raise RaynasError(f"Once-for-All training failed: {last_line(str(result.error))}")
        with result.checkpoint.as_directory() as checkpoint:
            state = torch.load(Path(checkpoint) / CHECKPOINT, map_location="cpu",
                               weights_only=False)
        weights = io.BytesIO()
        torch.save({"supernet": state["supernet"], "epochs_per_phase": epochs_per_phase},
                   weights)
        record.log_file("parent", SUPERNET_FILE, weights.getvalue())
        seconds = time.perf_counter() - started
        final = {k: result.metrics[k] for k in ("val_accuracy", "val_accuracy_smallest")}
        record.log_metrics("parent", {**final, "train_seconds": seconds}, epochs)
        record.tag("parent", {"raynas.supernet": SUPERNET_FILE})
    return TrainedSupernet(record.run_id, experiment, str(folder), epochs,
                           final["val_accuracy"], final["val_accuracy_smallest"], seconds,
                           record.ledger.pending)


@dataclass
class Specialized:
    target: str
    run_id: str  # the specialisation's child run
    model_uri: str  # models:/NAME/VERSION ("pending" while MLflow is away)
    arch: Arch
    predicted_accuracy: float
    val_accuracy: float
    test_accuracy: float
    costs: dict[str, Any]
    predictor_rmse: float
    samples: int
    evaluated: int  # sub-networks the evolution scored
    rejected: int  # ... and those it rejected for a constraint
    seconds: float
    times: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "arch_hash": arch_hash(self.arch)}


def target_name(constraints: list[Constraint]) -> str:
    """A registered-model-safe name of a target: ``latency_ms<=2.5`` -> ``latency_ms-le-2.5``."""
    words = {"<=": "le", "<": "lt", ">=": "ge", ">": "gt"}
    return "_".join(f"{c.metric}-{words[c.op]}-{str(c).removeprefix(c.metric + c.op)}"
                    for c in constraints)


@dataclass(frozen=True)
class SupernetRun:
    """What a specialisation reads of a supernet's run."""

    run_id: str
    experiment: str
    space: Space
    dataset: str
    seed: int
    folder: Path
    experiment_id: str
    samples: list[dict[str, Any]] | None  # earlier specialisations' predictor samples


def read_run(client: Any, run_id: str, local: Path) -> tuple[SupernetRun, Path]:
    """The supernet run and its weights, downloaded into ``local``; ConfigError for anything
    else."""
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise ConfigError(f"RUN: {run_id}: not an MLflow run in {client.tracking_uri} "
                          f"({last_line(exc.message)})") from None
    tags = run.data.tags
    if tags.get("raynas.role") != ROLE:
        raise ConfigError(f"RUN: run {run_id} is not a Once-for-All supernet (raynas.role="
                          f"{tags.get('raynas.role', 'unset')}); train one with raynas ofa train")
    files = {}
    for name in (SUPERNET_FILE, "space.yaml", SAMPLES_FILE):
        try:
            files[name] = Path(client.download_artifacts(run_id, name, str(local)))
        except (MlflowException, OSError):
            if name != SAMPLES_FILE:
                raise ConfigError(f"RUN: run {run_id} has no {name}: its training did not "
                                  "finish (or MLflow has not got it yet: raynas sync "
                                  f"{tags.get('raynas.folder', 'FOLDER')})") from None
    space = load_space(yaml.safe_load(files["space.yaml"].read_text()))
    samples = (json.loads(files[SAMPLES_FILE].read_text())["samples"]
               if SAMPLES_FILE in files else None)
    folder = Path(tags.get("raynas.folder", ""))
    if not tags.get("raynas.folder") or not folder.is_dir():  # trained on another machine
        folder = LEDGERS / f"ofa-{run_id}"
    return SupernetRun(run_id, client.get_experiment(run.info.experiment_id).name, space,
                       tags.get("raynas.dataset", "digits"), int(tags.get("raynas.seed", 0)),
                       folder, run.info.experiment_id, samples), files[SUPERNET_FILE]


def check_targets(texts: list[str] | None) -> list[Constraint]:
    constraints = parse_constraints(texts)
    if not constraints:
        raise ConfigError(f"--constraint: give at least one bound on {', '.join(COST_METRICS)} "
                          "(e.g. latency_ms<=2)")
    for c in constraints:
        if c.metric not in COST_METRICS:
            raise ConfigError(f"--constraint {c}: a specialisation bounds a sub-network's costs: "
                              f"{', '.join(COST_METRICS)}")
    return constraints


class Predictor:
    """Inherited accuracy from the encoded architecture: the ensemble of ``strategies.predictor``
    fitted on the samples; ``rmse`` is measured on a held-out share before the final fit."""

    def __init__(self, space: Space, samples: list[dict[str, Any]], seed: int) -> None:
        self.space, self.encoder = space, Encoder(space)
        order = list(range(len(samples)))
        random.Random(seed).shuffle(order)
        cut = max(1, round(HOLDOUT * len(samples)))
        held, kept = order[:cut], order[cut:]
        archs = [s["arch"] for s in samples]
        y = torch.tensor([s["accuracy"] for s in samples], dtype=torch.float32)
        x = self.features(archs)
        trial = self.fit(x[kept], y[kept], seed)
        self.rmse = float(((trial.predict(x[held]).mean(0) - y[held]) ** 2).mean().sqrt())
        self.ensemble = self.fit(x, y, seed)

    @staticmethod
    def fit(x: torch.Tensor, y: torch.Tensor, seed: int) -> Ensemble:
        generator = torch.Generator().manual_seed(seed)
        return Ensemble(x.shape[1], generator=generator).fit(x, y, steps=PREDICTOR_STEPS,
                                                             generator=generator)

    def features(self, archs: list[Arch]) -> torch.Tensor:
        return torch.tensor([self.encoder.arch(self.space, a) for a in archs],
                            dtype=torch.float32).reshape(len(archs), self.encoder.width)

    def __call__(self, arch: Arch) -> float:
        return float(self.ensemble.predict(self.features([arch])).mean())


def specialize(run_id: str, constraints: list[str], *, tracking: str | None = None,
               samples: int = 100, evaluations: int = 300, population: int = 20,
               name: str | None = None, latency_batch: int = 1, seed: int = 0,
               progress: Callable[[str], None] = stderr) -> Specialized:
    """The sub-network of supernet run ``run_id`` with the best predicted accuracy under
    ``constraints`` (``latency_ms<=2``, ``flops<=...``, ``params<=...``,
    ``peak_memory_mb<=...``), tested, logged and registered; see the module docstring. On one
    torch thread, as a trial with one CPU: the latencies are of that setting, and on a busy
    machine a second thread makes these small networks wait for a core (measured 5x slower)."""
    with one_thread():
        return _specialize(run_id, constraints, tracking, samples, evaluations, population,
                           name, latency_batch, seed, progress)


def _specialize(run_id: str, constraints: list[str], tracking: str | None, samples: int,
                evaluations: int, population: int, name: str | None, latency_batch: int,
                seed: int, progress: Callable[[str], None]) -> Specialized:
    started = time.perf_counter()
    parsed = check_targets(constraints)
    if samples < 5 or evaluations < 1 or population < 2 or latency_batch < 1:
        raise ConfigError("--samples must be >= 5, --evaluations >= 1, --population >= 2, "
                          "--latency-batch >= 1")
    client = connect(tracking_uri(tracking))
    with tempfile.TemporaryDirectory(prefix="raynas-ofa-") as local:
        source, weights = read_run(client, run_id, Path(local))
        data = load_dataset(source.dataset, seed=source.seed)
        supernet = load_supernet(weights, source.space, data)
    target = ", ".join(map(str, parsed))
    cpu = torch.device("cpu")
    x, x_val, y_val, x_test, y_test = tensors(cpu, data.x_train, data.x_val, data.y_val,
                                              data.x_test, data.y_test)
    record = SearchRecord.open(source.folder, client.tracking_uri, source.experiment_id,
                               progress)
    record.ledger.bind("parent", run_id)
    times: dict[str, float] = {}

    clock = time.perf_counter()
    if source.samples is None or len(source.samples) < samples:
        progress(f"specialize: inherited accuracy of {samples} sampled sub-networks "
                 "(the predictor's data)")
        drawn = sample_subnets(supernet, samples, x, x_val, y_val, seed)
        record.log_dict("parent", {"samples": drawn, "split": "val"}, SAMPLES_FILE)
    else:
        drawn = source.samples
    times["samples_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    predictor = Predictor(source.space, drawn, seed)
    times["predictor_s"] = time.perf_counter() - clock
    progress(f"specialize: accuracy predictor on {len(drawn)} sub-networks, held-out RMSE "
             f"{predictor.rmse:.4f}")

    clock = time.perf_counter()
    settings = CostSettings(constraints=tuple(parsed), latency_batch=latency_batch)
    ranked, evaluated, rejected = evolve(supernet, data, settings, predictor, evaluations,
                                         population, seed)
    arch, predicted, costs, missed = confirm(ranked, source.space, data, settings)
    times["search_s"] = time.perf_counter() - clock
    progress(f"specialize: evolution scored {evaluated} sub-networks ({rejected} rejected by "
             f"{target}); best predicted accuracy {predicted:.4f}"
             + (f"; {missed} better-scored ones broke the target when measured" if missed
                else ""))

    clock = time.perf_counter()
    model = supernet.extract(arch)
    recalibrate(model, x, BN_BATCHES, BATCH_SIZE, seed)
    val_accuracy = evaluate(model, x_val, y_val)[1]
    test_loss, test_accuracy = evaluate(model, x_test, y_test)
    times["evaluate_s"] = time.perf_counter() - clock

    slug = target_name(parsed)
    key = f"specialize/{slug}"
    model_name = name or f"{source.experiment}-{slug}"
    with tracking_session(record, [key], progress=progress):
        record.child(key, f"specialize-{slug}", {
            "raynas.role": "specialize", "raynas.target": target,
            "raynas.arch_hash": arch_hash(arch), "raynas.space": source.space.name,
            "raynas.dataset": source.dataset})
        record.log_params(key, {"constraints": target, "samples": len(drawn),
                                "evaluations": evaluations, "population": population,
                                "latency_batch": latency_batch, "seed": seed,
                                **{f"arch.{k}": v for k, v in source.space.encode(arch).items()}})
        metrics = {"predicted_accuracy": predicted, "val_accuracy": val_accuracy,
                   "test_accuracy": test_accuracy, "test_loss": test_loss,
                   "predictor_rmse": predictor.rmse, "evaluated": evaluated,
                   "rejected": rejected,
                   **{k: float(v) for k, v in costs.items() if isinstance(v, int | float)
                      and not isinstance(v, bool)}}
        files = save_final_model(record.ledger.folder, model.cpu().eval(), data.x_test[:5],
                                 key.replace("/", "-"))
        record.ledger.write("model", key, **files, name=model_name, arch=arch,
                            space_yaml=space_yaml(source.space), metrics=metrics)
    uri = record.ledger.outputs.get(f"{key}:model_uri", "pending")
    return Specialized(target, record.ledger.runs.get(key, "pending"), uri, arch, predicted,
                       val_accuracy, test_accuracy, costs, predictor.rmse, len(drawn),
                       evaluated, rejected, time.perf_counter() - started, times)


def sample_subnets(supernet: Any, count: int, x_train: torch.Tensor,
                   x: torch.Tensor, y: torch.Tensor, seed: int) -> list[dict[str, Any]]:
    """``count`` uniformly sampled sub-networks with their inherited accuracy on (x, y)."""
    rng = random.Random(seed)
    archs = [supernet.space.sample(rng) for _ in range(count)]
    return [{"arch": a, "accuracy": inherited_accuracy(supernet, a, x_train, x, y, seed)}
            for a in archs]


def evolve(supernet: Any, data: Dataset, settings: CostSettings,
           predictor: Callable[[Arch], float], evaluations: int, population: int, seed: int
           ) -> tuple[tuple[Arch, float], int, int]:
    """Regularized evolution driven in-process: ``evaluations`` proposals, each rejected if it
    breaks a constraint, else scored by the predictor. The smallest sub-network seeds the
    population (a tight constraint rejects most random ones); if it breaks a constraint
    already, nothing will satisfy it. Returns (the distinct admitted sub-networks with their
    scores, best first; scored, rejected)."""
    space, cpu = supernet.space, torch.device("cpu")
    costs: dict[str, dict[str, Any]] = {}

    def feasible(arch: Arch) -> bool:
        digest = arch_hash(arch)
        if digest not in costs:
            costs[digest] = measure(space, arch, data, settings, cpu, settings.latency_batch,
                                    timed=any(c.metric == "peak_memory_mb"
                                              for c in settings.constraints))
        return costs[digest].get(FEASIBLE) is not False

    smallest = supernet.choices.smallest()
    if not feasible(smallest):
        measured = costs[arch_hash(smallest)]
        raise ConfigError(f"--constraint {', '.join(map(str, settings.constraints))}: no "
                          f"sub-network satisfies it, not even the smallest "
                          f"({measured.get('violations')}: "
                          + ", ".join(f"{k} {v:.4g}" for k, v in measured.items()
                                      if k in (*COST_METRICS, "latency_lut_ms")) + ")")
    searcher = RegularizedEvolution(space, population_size=population,
                                    sample_size=max(2, population // 4), seed=seed)
    admitted = {arch_hash(smallest): (smallest, predictor(smallest))}
    searcher.learn("smallest", smallest, admitted[arch_hash(smallest)][1])
    scored, rejected = 1, 0
    for step in range(evaluations):
        arch = searcher.propose()
        if not feasible(arch):
            rejected += 1
            continue
        score = predictor(arch)
        searcher.learn(str(step), arch, score)
        scored += 1
        admitted[arch_hash(arch)] = (arch, score)
    return sorted(admitted.values(), key=lambda a: -a[1]), scored, rejected


def confirm(ranked: list[tuple[Arch, float]], space: Space, data: Dataset,
            settings: CostSettings, tries: int = CONFIRM_TRIES
            ) -> tuple[Arch, float, dict[str, Any], int]:
    """The best-scored sub-network whose *measured* costs meet the target. The latency table
    adds up its parts' latencies and misses a whole network's overheads (it under-predicted by
    up to 30 % here), so the winner is measured; after a miss, the table's predictions are
    scaled by the worst measured/predicted ratio seen, and candidates that cannot meet the
    target at that scale are passed over unmeasured. Returns (arch, score, its costs, how many
    measured ones missed)."""
    latency = [c for c in settings.constraints if c.metric == "latency_ms"]
    scale, missed, costs = 1.0, 0, {}
    for arch, score in ranked:
        if latency and scale > 1:
            predicted = measure(space, arch, data, settings, torch.device("cpu"),
                                settings.latency_batch, timed=False).get(PREDICTED_LATENCY)
            if predicted is not None and not all(c.holds(predicted * scale) for c in latency):
                continue
        costs = measure(space, arch, data, settings, torch.device("cpu"),
                        settings.latency_batch)
        if costs.get(FEASIBLE) is not False:
            return arch, score, costs, missed
        missed += 1
        if costs.get(PREDICTED_LATENCY) and costs.get("latency_ms"):
            scale = max(scale, costs["latency_ms"] / costs[PREDICTED_LATENCY])
        if missed >= tries:
            break
    raise ConfigError(f"--constraint {', '.join(map(str, settings.constraints))}: "
                      f"{missed} sub-networks the latency table admits broke it when measured "
                      f"(the last: {costs.get(VIOLATIONS)}, latency {costs.get('latency_ms')} "
                      f"ms); loosen it")
