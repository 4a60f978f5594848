"""One search end to end: validate -> Tune (strategy + scheduler + trainable) -> best
architecture -> retrain on train+val -> test accuracy -> MLflow model and registry."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import raynas
from raynas.config import SearchConfig, fidelity_of, objectives_of, validate
from raynas.data import Dataset
from raynas.errors import ConfigError, RaynasError, SearchInterrupted
from raynas.estimation.train import TrialSettings, retrain, train_trial
from raynas.ledger import Ledger
from raynas.space import Space, arch_hash
from raynas.space import space_yaml as to_yaml
from raynas.strategies import (
    StrategyContext,
    bracket_warning,
    make_plan,
    scheduler_for,
)
from raynas.strategies.pareto import log_pareto
from raynas.tracking import (
    FailureBudget,
    MLflowTracker,
    SearchRecord,
    connect,
    git_sha,
    last_line,
    save_final_model,
    tracking_uri,
    ui_command,
)

METRIC, MODE = "val_accuracy", "max"
STATE = "raynas.json"  # in a search's folder: its config, MLflow run and Tune path
DEFAULT_STORAGE = "~/ray_results"  # Tune's default
LEDGERS = Path("~/.raynas/ledgers").expanduser()  # the ledger of a search stored at a URI
# Checkpointing every epoch is deliberate (fault tolerance); Tune's warning about it is noise.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# Trials without GPUs must not hide the GPUs from a driver that has them (Ray 2.60 warns).
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


@dataclass
class SearchResult:
    experiment: str
    parent_run_id: str
    num_trials: int
    num_failed: int
    best: dict[str, Any]
    model_uri: str
    tracking_uri: str
    wall_time_s: float
    ui: str  # the command that opens the MLflow UI on these results
    folder: str = ""  # Tune results + MLflow ledger: what --resume and raynas sync take

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "ui"}


_START = time.monotonic()


def _stderr(message: str) -> None:
    """Progress goes to stderr, so ``--json`` output on stdout stays machine-readable."""
    print(f"[raynas {time.monotonic() - _START:6.1f}s] {message}", file=sys.stderr, flush=True)


def _init_ray(address: str | None, progress: Callable[[str], None]) -> bool:
    """Start or join Ray unless the caller already did; True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    try:
        # "local" unless told otherwise: a cluster someone started with `ray start` on this
        # machine is joined only with --address auto (plain ray.init() would join it).
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or "local",
                 include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False, configure_logging=True)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = address or "a local instance"
        raise ConfigError(f"--address: cannot connect to Ray at {where} ({exc})") from None
    resources = ray.cluster_resources()
    progress(f"Ray: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")
    return True


def search(config: SearchConfig, progress: Callable[[str], None] = _stderr,
           validated: tuple[Space, Dataset] | None = None) -> SearchResult:
    """Run a search as configured, or - with ``config.resume`` - finish an interrupted one.
    ``validated``: what ``validate(config)`` returned, when the caller ran it already."""
    import ray

    started = time.time()
    saved = read_state(config.resume) if config.resume else None
    if saved:
        config = replace(SearchConfig(**saved["config"]), resume=config.resume,
                         address=config.address or saved["config"]["address"])
    space, data = validated or validate(config)
    uri = saved["tracking_uri"] if saved else tracking_uri(config.tracking_uri)
    client = connect(uri)
    experiment = config.experiment or space.name
    progress(f"space {space.name} ({space.size():.3g} architectures), {data.summary()}")

    we_started_ray = _init_ray(config.address, progress)
    try:
        if config.gpus_per_trial > 0 and ray.cluster_resources().get("GPU", 0) == 0:
            raise ConfigError(f"--gpus-per-trial {config.gpus_per_trial:g}: the Ray cluster has "
                              "no GPUs")
        objectives = objectives_of(config)
        metrics, modes = [m for m, _ in objectives], [mode for _, mode in objectives]
        ctx = StrategyContext(space, metrics if len(metrics) > 1 else metrics[0],
                              modes if len(modes) > 1 else modes[0], config.seed,
                              config.num_trials, config.concurrency,
                              fidelity_of(config).max_budget, config.scheduler)
        plan = make_plan(config.strategy, ctx)
        yaml_text = to_yaml(space)
        if saved:
            record = SearchRecord(Ledger.open(saved["folder"], uri, saved["experiment_id"],
                                              progress))
            record.ledger.write("reopen", "parent")
            progress(f"resuming {saved['tune_path']} (MLflow run {record.run_id}); "
                     f"{record.ledger.flush(wait_s=10)} MLflow writes still pending")
        else:
            name = f"{experiment}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
            base = config.storage or os.environ.get("RAYNAS_STORAGE") or DEFAULT_STORAGE
            folder = Path(base).expanduser() / name if "://" not in base else LEDGERS / name
            record = SearchRecord.start(client, experiment, folder.resolve(), tags={
                "raynas.name": name, "raynas.role": "search", "raynas.space": space.name,
                "raynas.strategy": config.strategy, "raynas.scheduler": config.scheduler,
                "raynas.dataset": config.dataset, "raynas.seed": str(config.seed),
                "raynas.version": raynas.__version__, "raynas.git_sha": git_sha() or "unknown",
                "raynas.objectives": ",".join(f"{m}:{mode}" for m, mode in objectives),
                **{f"raynas.{k}": v for k, v in plan.notes.items()},
            }, params={k: v for k, v in asdict(config).items() if v is not None},
                space_yaml=yaml_text, warn=progress)
            saved = {"config": asdict(config), "tracking_uri": uri, "folder": str(folder),
                     "tune_path": f"{base.rstrip('/')}/{name}" if "://" in base else str(folder),
                     "experiment_id": record.ledger.experiment_id}
            (folder / STATE).write_text(json.dumps(saved, indent=1))
        try:
            result = _run(config, space, data, ctx, plan, objectives, record, progress,
                          yaml_text, experiment, saved, started)
        except SearchInterrupted:
            record.end("parent", "KILLED")
            raise
        except BaseException:
            record.end("parent", "FAILED")
            raise
        return result
    finally:
        if we_started_ray:
            ray.shutdown()


def read_state(path: str) -> dict[str, Any]:
    """What a search folder says about its search (``--resume``, ``raynas sync``)."""
    folder = Path(path).expanduser().resolve()
    if not (folder / STATE).is_file():
        raise ConfigError(f"--resume: {path}: not a raynas search folder (no {STATE}); the "
                          "folder is printed when a search starts and tagged raynas.folder on "
                          "its MLflow run")
    return {**json.loads((folder / STATE).read_text()), "folder": str(folder)}


def sync(path: str, wait_s: float = 60.0, progress: Callable[[str], None] = _stderr) -> int:
    """Apply a search's pending MLflow writes (after an outage); returns how many remain."""
    saved = read_state(path)
    connect(saved["tracking_uri"])
    ledger = Ledger.open(saved["folder"], saved["tracking_uri"], saved["experiment_id"],
                         progress)
    before = ledger.pending
    left = ledger.flush(wait_s=wait_s)
    progress(f"{before - left} MLflow writes applied, {left} pending")
    return left


def _run(config, space, data, ctx, plan, objectives, record, progress, yaml_text, experiment,
         saved, started):
    import ray
    from ray import tune

    fidelity = fidelity_of(config)
    settings = TrialSettings(fidelity, config.seed, config.cpus_per_trial, config.gpus_per_trial)
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, space=space, data=data, settings=settings),
        {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial})
    ledger = record.ledger
    metric, mode = objectives[0]
    if config.resume and tune.Tuner.can_restore(saved["tune_path"]):
        # The restored Tuner brings its own tracker, scheduler and searcher (with its state);
        # the tracker writes through this same ledger (see ``Ledger.open``).
        tuner = tune.Tuner.restore(saved["tune_path"], trainable, resume_unfinished=True,
                                   resume_errored=False)
    else:
        tracker = MLflowTracker(record, space, fidelity, progress)
        if plan.dedup is not None:
            plan.dedup.on_reuse = tracker.on_duplicate
        progress(f"searching: {config.strategy} + {config.scheduler}, {plan.num_trials} "
                 f"trials, {fidelity.describe()}, {config.concurrency} at a time; MLflow run "
                 f"{record.run_id}; folder {ledger.folder}")
        scheduler = scheduler_for(plan, ctx)
        if warning := bracket_warning(scheduler, config.concurrency):
            progress(f"warning: {warning}")
        base, _, name = saved["tune_path"].rstrip("/").rpartition("/")
        tuner = tune.Tuner(
            trainable,
            param_space=plan.param_space,
            tune_config=tune.TuneConfig(
                metric=metric, mode=mode, search_alg=plan.searcher, scheduler=scheduler,
                num_samples=plan.num_trials, reuse_actors=True),
            run_config=tune.RunConfig(
                name=name, storage_path=base, callbacks=[tracker], verbose=0,
                stop=FailureBudget(tracker, config.max_failed_trials),
                # PBT restores a trial from another trial's checkpoint: keep them all for it.
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=None if config.scheduler == "pbt" else 1),
                # A trial whose worker dies resumes from its last epoch's checkpoint.
                failure_config=tune.FailureConfig(max_failures=config.max_retries)),
        )
    grid = tuner.fit()
    if ledger.live:
        raise SearchInterrupted(f"interrupted with {len(ledger.live)} trials running; resume "
                                f"with: raynas search --resume {ledger.folder}")
    for key in ledger.lost():  # started just before the driver died, unknown to Tune's state
        ledger.write("delete", key)
        progress(f"{key}: lost with the previous driver (not in Tune's saved state); its "
                 "MLflow run is deleted, Tune ran its budget slot again")
    failed = [r for r in grid if r.error]
    finished = [r for r in grid if not r.error and metric in (r.metrics or {})]
    if not finished:
        first = last_line(str(failed[0].error)) if failed else "no results"
        raise RaynasError(f"all {len(grid)} trials failed; first error: {first}")
    best = (max if mode == "max" else min)(finished, key=lambda r: r.metrics[metric])
    if len(objectives) > 1:
        front = log_pareto(record, [r.metrics for r in finished], objectives)
        progress(f"Pareto front: {len(front)} of {len(finished)} trials (pareto.json, pareto.png)")
    arch = space.decode(best.config)
    val_accuracy = best.metrics[METRIC]
    record.tag("parent", {"raynas.best_trial_id": best.metrics["trial_id"]})
    final = next((op["args"] for op in ledger.ops if op["op"] == "model"), None)
    if final is None:  # not retrained yet (a resumed search may have done it before)
        progress(f"best: trial {best.metrics['trial_id']} val_accuracy={val_accuracy:.4f} "
                 f"({len(finished)} finished, {len(failed)} failed); retraining on train+val "
                 f"for {config.retrain_epochs} epochs")
        record.child("final", "final", {"raynas.role": "final", "raynas.arch_hash":
                                        arch_hash(arch), "raynas.trial_id":
                                        best.metrics["trial_id"]})
        task = ray.remote(retrain).options(num_cpus=config.cpus_per_trial,
                                           num_gpus=config.gpus_per_trial)
        retrained = ray.get(task.remote(space, arch, data, config.retrain_epochs, settings))
        for epoch, loss in enumerate(retrained.train_loss, start=1):
            record.log_metrics("final", {"train_loss": loss}, epoch)
        files = save_final_model(ledger.folder, retrained.model, data.x_test[:5])
        ledger.write("model", "final", **files, name=experiment, arch=arch, space_yaml=yaml_text,
                     metrics={"test_accuracy": retrained.test_accuracy,
                              "test_loss": retrained.test_loss,
                              "search_val_accuracy": val_accuracy})
        final = ledger.ops[-1]["args"]
    test_accuracy = final["metrics"]["test_accuracy"]
    duplicates = len(plan.dedup.reused) if plan.dedup is not None else 0
    record.log_metrics("parent", {"best_val_accuracy": val_accuracy,
                                  "test_accuracy": test_accuracy, "num_trials": len(grid),
                                  "num_failed": len(failed), "num_duplicates": duplicates}, 0)
    record.log_dict("parent", arch, "best_architecture.json")
    record.end("parent")
    if pending := ledger.flush(wait_s=config.tracking_wait):
        progress(f"warning: MLflow is still unreachable; {pending} writes (the final model "
                 f"among them) wait in {ledger.folder}: run raynas sync {ledger.folder}")
    return SearchResult(
        experiment=experiment, parent_run_id=record.run_id, num_trials=len(grid),
        num_failed=len(failed),
        best={"arch": arch, "trial_id": best.metrics["trial_id"], "val_accuracy": val_accuracy,
              "test_accuracy": test_accuracy, "arch_hash": arch_hash(arch)},
        model_uri=ledger.outputs.get("model_uri", "pending"), tracking_uri=saved["tracking_uri"],
        wall_time_s=round(time.time() - started, 1), ui=ui_command(saved["tracking_uri"]),
        folder=str(ledger.folder),
    )
