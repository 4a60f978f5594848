"""One search end to end: validate -> Tune (strategy + scheduler + trainable) -> best
architecture -> retrain on train+val -> test accuracy -> MLflow model and registry."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
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
from raynas.estimation.costs import FEASIBLE, VIOLATIONS, CostSettings
from raynas.estimation.tabular import SIM_TIME, Table, tabular_outcome
from raynas.estimation.train import TrialSettings, retrain, train_trial
from raynas.ledger import Ledger
from raynas.mirror import FOLDER as MIRROR
from raynas.mirror import Mirror
from raynas.objectives import parse_constraints
from raynas.report.search import attach as attach_report
from raynas.scalarize import (
    CALIBRATION_SAMPLES,
    SCALAR,
    Scalarizer,
    calibrate,
    make_scalarizer,
    needs_sample,
    parse_weights,
    scalarization_of,
)
from raynas.space import Space, arch_hash
from raynas.space import space_yaml as to_yaml
from raynas.strategies import (
    StrategyContext,
    bracket_warning,
    make_plan,
    scheduler_for,
)
from raynas.strategies.pareto import log_pareto
from raynas.strategies.zero_cost import ZeroCostSettings
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
AUTO = "auto"  # --resume auto: resume the search at --storage/EXPERIMENT if there is one
DEFAULT_STORAGE = "~/ray_results"  # Tune's default
# The folder of a search whose storage is a URI (mirrored there: see raynas.mirror).
LEDGERS = Path(os.environ.get("RAYNAS_LEDGERS") or "~/.raynas/ledgers").expanduser().resolve()
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
    saved = read_state(config.resume) if config.resume not in (None, AUTO) else None
    if saved:
        config = _saved_config(saved, config)
    space, data = validated or validate(config)
    experiment = config.experiment or space.name
    if config.resume == AUTO:
        found = _auto_folder(config, experiment)
        if (found / STATE).is_file():
            saved = read_state(str(found))
            progress(f"--resume auto: {found} holds this search; resuming it")
            given, config = config, _saved_config(saved, config)
            if asdict(replace(given, resume=None)) != asdict(replace(config, resume=None)):
                progress("warning: --resume auto: the saved settings apply, not these flags")
                space, data = validate(config)
        else:
            progress(f"--resume auto: no search in {found} yet; starting it there")
    uri = saved["tracking_uri"] if saved else tracking_uri(config.tracking_uri)
    client = connect(uri)
    progress(f"space {space.name} ({space.size():.3g} architectures), {data.summary()}")

    we_started_ray = _init_ray(config.address, progress)
    try:
        if config.gpus_per_trial > 0 and ray.cluster_resources().get("GPU", 0) == 0:
            raise ConfigError(f"--gpus-per-trial {config.gpus_per_trial:g}: the Ray cluster has "
                              "no GPUs")
        objectives = objectives_of(config)
        metrics, modes = ([SCALAR], ["min"]) if scalarization_of(config, len(objectives)) else (
            [m for m, _ in objectives], [mode for _, mode in objectives])
        ctx = StrategyContext(space, metrics if len(metrics) > 1 else metrics[0],
                              modes if len(modes) > 1 else modes[0], config.seed,
                              config.num_trials, config.concurrency,
                              fidelity_of(config).max_budget, config.scheduler, data=data,
                              zero_cost=ZeroCostSettings.of(config),
                              constraints=tuple(parse_constraints(config.constraint)),
                              supernet=config.supernet, oneshot_searcher=config.oneshot_searcher)
        plan = make_plan(config.strategy, ctx)
        yaml_text = to_yaml(space)
        if saved:
            record = SearchRecord(Ledger.open(saved["folder"], uri, saved["experiment_id"],
                                              progress), _mirror(saved))
            _forget_unknown_runs(record, progress)
            record.ledger.write("reopen", "parent")
            progress(f"resuming {saved['tune_path']} (MLflow run {record.run_id}); "
                     f"{record.ledger.flush(wait_s=10)} MLflow writes still pending")
        else:
            # --resume auto: a fixed name, so that the same command finds it again.
            name = experiment if config.resume == AUTO else (
                f"{experiment}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}")
            base = _storage(config)
            folder = _folder(base, name)
            tune_path = f"{base.rstrip('/')}/{name}" if "://" in base else str(folder)
            remote = {"mirror": f"{tune_path}/{MIRROR}"} if "://" in base else {}
            if remote:  # a missing bucket is an error now, before there is a run in MLflow
                Mirror.of(remote["mirror"], folder).check()
            record = SearchRecord.start(client, experiment, folder.resolve(), tags={
                "raynas.name": name, "raynas.role": "search", "raynas.space": space.name,
                "raynas.strategy": config.strategy, "raynas.scheduler": config.scheduler,
                "raynas.dataset": config.dataset, "raynas.seed": str(config.seed),
                "raynas.version": raynas.__version__, "raynas.git_sha": git_sha() or "unknown",
                "raynas.objectives": ",".join(f"{m}:{mode}" for m, mode in objectives),
                **{f"raynas.{k}": v for k, v in {**plan.notes, **remote}.items()},
            }, params={k: v for k, v in asdict(config).items() if v is not None},
                space_yaml=yaml_text, warn=progress)
            saved = {"config": asdict(config), "tracking_uri": uri, "folder": str(folder),
                     "tune_path": tune_path, "experiment_id": record.ledger.experiment_id,
                     **remote}
            record.mirror = _mirror(saved)
            _save_state(saved, record.mirror)
        try:
            result = _run(config, space, data, ctx, plan, objectives, record, progress,
                          yaml_text, experiment, saved, started)
        except SearchInterrupted:
            record.end("parent", "KILLED")
            raise
        except BaseException:
            record.end("parent", "FAILED")
            raise
        finally:  # how the search ended is on the storage too
            record.push()
        return result
    finally:
        if we_started_ray:
            ray.shutdown()


def _storage(config: SearchConfig) -> str:
    """The storage path or URI; a local path made absolute (Tune takes no relative one)."""
    base = config.storage or os.environ.get("RAYNAS_STORAGE") or DEFAULT_STORAGE
    return base if "://" in base else str(Path(base).expanduser().absolute())


def _folder(base: str, name: str) -> Path:
    """A search's own folder (raynas.json, the MLflow ledger): ``STORAGE/NAME`` with Tune's
    files, or for a URI ``LEDGERS/<hash of the URI>/NAME`` on this machine (two buckets'
    searches of one name do not meet), mirrored to ``STORAGE/NAME/raynas``."""
    if "://" not in base:
        return Path(base).expanduser() / name
    return LEDGERS / hashlib.sha256(base.rstrip("/").encode()).hexdigest()[:12] / name


def _auto_folder(config: SearchConfig, experiment: str) -> Path:
    """Where ``--resume auto`` keeps a search: ``STORAGE/EXPERIMENT``, where every (re)start of
    the driver finds it - a KubeRay retry runs on a brand-new cluster. For a URI the copy in
    the storage is the truth (Tune resumes from the state there): it replaces the local folder,
    and a local folder the storage does not have is dropped."""
    base = _storage(config)
    folder = _folder(base, experiment).resolve()
    if "://" in base and not Mirror.of(f"{base.rstrip('/')}/{experiment}/{MIRROR}",
                                       folder).pull():
        shutil.rmtree(folder, ignore_errors=True)
    return folder


def _mirror(saved: dict[str, Any]) -> Mirror | None:
    return Mirror.of(saved["mirror"], saved["folder"]) if saved.get("mirror") else None


def _save_state(saved: dict[str, Any], mirror: Mirror | None) -> None:
    """Write a search's raynas.json (and copy it to a remote storage)."""
    (Path(saved["folder"]) / STATE).write_text(json.dumps(saved, indent=1))
    if mirror is not None:
        mirror.push()


def _forget_unknown_runs(record: SearchRecord, progress: Callable[[str], None]) -> None:
    """Before a search resumes: delete the trial runs its ledger does not know. With a remote
    storage the ledger resumed from is the copy taken at Tune's last experiment checkpoint, so
    runs created after it are unknown to Tune's state as well: those trials run again, under
    new runs. Runs it knows may have steps logged after that copy: noted, so that a trial
    resumed from an earlier checkpoint does not log them twice."""
    ledger = record.ledger
    keys = {op["key"] for op in ledger.ops}
    try:
        runs = ledger.client.search_runs(
            [ledger.experiment_id], f"tags.mlflow.parentRunId = '{record.run_id}'",
            max_results=50_000)
        unknown = []
        for run in runs:
            key = run.data.tags.get("raynas.key")
            if key is not None and key not in keys:
                ledger.client.delete_run(run.info.run_id)
                unknown.append(key)
            elif key is not None and (steps := [m.step for m in run.data.to_proto().metrics]):
                ledger.last_step[key] = max(ledger.last_step.get(key, 0), *steps)
    except Exception as exc:  # noqa: BLE001 - MLflow unreachable: the resume goes on
        progress(f"warning: cannot check MLflow for runs the ledger does not know "
                 f"({type(exc).__name__}); any such run stays RUNNING")
        return
    if unknown or record.mirror is not None:
        progress(f"MLflow runs newer than the search's ledger (their trials run again): "
                 f"{len(unknown)} deleted")


def _saved_config(saved: dict[str, Any], given: SearchConfig) -> SearchConfig:
    """A resumed search runs with its saved settings; only the cluster it joins is new."""
    return replace(SearchConfig(**saved["config"]), resume=saved["folder"],
                   address=given.address or saved["config"]["address"])


def read_state(path: str, search: bool = True) -> dict[str, Any]:
    """What a search folder says about its search (``--resume``, ``extend``), or, with
    ``search=False``, any ledger folder (``raynas sync``: a retrain's too)."""
    folder = Path(path).expanduser().resolve()
    if not (folder / STATE).is_file():
        raise ConfigError(f"--resume: {path}: not a raynas search folder (no {STATE}); the "
                          "folder is printed when a search starts and tagged raynas.folder on "
                          "its MLflow run")
    saved = json.loads((folder / STATE).read_text())
    if search and "config" not in saved:
        raise ConfigError(f"--resume: {path}: the ledger folder of a {saved.get('role', 'retrain')}"
                          ", not of a search: only raynas sync takes it")
    return {**saved, "folder": str(folder)}


def segments(saved: dict[str, Any]) -> list[dict[str, Any]]:
    """The parts of a search, in order: the first run, then each ``extend`` (a Tune experiment
    each: Tune cannot add samples to a finished one)."""
    return saved.get("segments") or [{"tune_path": saved["tune_path"]}]


def restore_searcher(searcher: Any, tune_path: str) -> None:
    """Load the state a finished Tune experiment saved for ``searcher`` (and its wrappers) into
    this freshly built searcher, as Tune's own restore would."""
    import pyarrow.fs
    from ray.tune.search import SearchGenerator

    if "://" not in tune_path:
        SearchGenerator(searcher).restore_from_dir(tune_path)
        return
    # Tune reads these files with a local glob: from a bucket, they are copied out first.
    fs, path = pyarrow.fs.FileSystem.from_uri(tune_path)
    with tempfile.TemporaryDirectory() as local:
        for info in fs.get_file_info(pyarrow.fs.FileSelector(path)):
            if info.base_name.startswith(("search_gen_state-", "searcher-state-")):
                pyarrow.fs.copy_files(info.path, f"{local}/{info.base_name}",
                                      source_filesystem=fs)
        SearchGenerator(searcher).restore_from_dir(local)


def extend(target: str, num_trials: int, tracking: str | None = None,
           progress: Callable[[str], None] = _stderr) -> SearchResult:
    """Give a finished search ``num_trials`` more trials: the same strategy state, MLflow parent
    run and search folder, new trial runs; the best of all of them is the result."""
    if num_trials < 1:
        raise ConfigError("--num-trials: must be >= 1")
    folder = find_search(target, tracking)
    saved = read_state(folder)
    config = SearchConfig(**saved["config"])
    if config.strategy == "grid":
        raise ConfigError("extend: a grid search has no strategy state to go on from; run the "
                          "grid again with a larger --num-trials")
    ledger = Ledger.open(saved["folder"], saved["tracking_uri"], saved["experiment_id"],
                         progress)
    if ledger.status.get("parent") != "FINISHED":
        raise ConfigError(f"extend: the search in {folder} has not finished; finish it first: "
                          f"raynas search --resume {folder}")
    parts = segments(saved)
    saved["segments"] = [*parts, {"tune_path": f"{parts[0]['tune_path']}-ext{len(parts)}",
                                  "num_trials": num_trials}]
    _save_state(saved, _mirror(saved))
    progress(f"extending {folder} by {num_trials} trials (part {len(parts) + 1})")
    return search(replace(config, resume=saved["folder"]), progress)


def find_search(target: str, tracking: str | None = None) -> str:
    """A search folder from a folder, or from an MLflow experiment name (its latest search)."""
    if Path(target).expanduser().is_dir():
        return target
    client = connect(tracking_uri(tracking))
    found = client.get_experiment_by_name(target)
    runs = client.search_runs([found.experiment_id], "tags.`raynas.role` = 'search'",
                              order_by=["attributes.start_time DESC"], max_results=1
                              ) if found else []
    if not runs:
        raise ConfigError(f"{target}: neither a search folder nor an MLflow experiment with a "
                          f"search in {client.tracking_uri}")
    tags = runs[0].data.tags
    folder, remote = tags["raynas.folder"], tags.get("raynas.mirror")
    if Path(folder).is_dir() or remote is None:
        return folder
    # It ran on another machine (a cluster's driver) with its storage in a bucket: the copy
    # there, in this machine's folder for that storage, as a resume there would use it.
    local = _folder(remote.rsplit("/", 2)[0], tags["raynas.name"]).resolve()
    if not Mirror.of(remote, local).pull():
        raise ConfigError(f"{target}: its search folder is neither here ({folder}) nor in "
                          f"{remote}")
    return str(local)


def sync(path: str, wait_s: float = 60.0, progress: Callable[[str], None] = _stderr) -> int:
    """Apply a search's pending MLflow writes (after an outage); returns how many remain."""
    saved = read_state(path, search=False)
    connect(saved["tracking_uri"])
    ledger = Ledger.open(saved["folder"], saved["tracking_uri"], saved["experiment_id"],
                         progress)
    before = ledger.pending
    left = ledger.flush(wait_s=wait_s)
    if (mirror := _mirror(saved)) is not None:  # what is applied now is not applied again
        mirror.push(progress)
    progress(f"{before - left} MLflow writes applied, {left} pending")
    return left


def _cost_settings(config: SearchConfig, objectives: list, space: Space, data: Any,
                   saved: dict[str, Any], record: SearchRecord,
                   progress: Callable[[str], None]) -> CostSettings:
    """What trials measure and check, and - when several objectives are scalarised - the
    scalariser. Its ranges are measured once per search, where the trials run, and kept in the
    search's folder, so a resumed search goes on comparing trials on the same scale."""
    import ray

    costs = CostSettings(tuple(parse_constraints(config.constraint)), config.latency_batch,
                         config.latency_device)
    kind = scalarization_of(config, len(objectives))
    if kind is None:
        return replace(costs, search_metrics=tuple(m for m, _ in objectives))
    if "scalarizer" in saved:
        scalarizer = Scalarizer.from_json(saved["scalarizer"])
    else:
        sample = []
        if sampled := needs_sample(objectives, data.num_classes):
            progress(f"scalarize: measuring {CALIBRATION_SAMPLES} random architectures for the "
                     f"range of {', '.join(sampled)}")
            args = (space, data, replace(costs, constraints=()), config.gpus_per_trial,
                    config.cpus_per_trial, config.seed)  # the whole space's range
            if {"latency_ms", "peak_memory_mb"} & set(sampled):  # where the trials run
                sample = ray.get(ray.remote(calibrate).options(
                    num_cpus=config.cpus_per_trial, num_gpus=config.gpus_per_trial
                ).remote(*args, timed=True))
            else:  # params and FLOPs are the same anywhere
                sample = calibrate(*args, timed=False)
        scalarizer = make_scalarizer(kind, objectives, parse_weights(config.weights,
                                                                     len(objectives)),
                                     data.num_classes, sample)
        saved["scalarizer"] = asdict(scalarizer)
        _save_state(saved, record.mirror)
        record.tag("parent", {"raynas.scalarize": kind})
        record.log_dict("parent", scalarizer.describe(), "scalarization.json")
    return replace(costs, scalarizer=scalarizer, search_metrics=(SCALAR,))


def _run(config, space, data, ctx, plan, objectives, record, progress, yaml_text, experiment,
         saved, started):
    import ray
    from ray import tune

    fidelity = fidelity_of(config)
    settings = TrialSettings(fidelity, config.seed, config.cpus_per_trial, config.gpus_per_trial,
                             _cost_settings(config, objectives, space, data, saved, record,
                                            progress),
                             checkpoint_last=config.scheduler == "pbt")
    trainable = tune.with_resources(
        # weight sharing: trials score with shared weights (oneshot trains its supernet here)
        plan.estimator.trainable(space, data, settings, record, saved["tune_path"], progress)
        if plan.estimator else
        tune.with_parameters(train_trial, space=space, data=data, settings=settings),
        {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial})
    tabular = isinstance(data, Table)  # a tabular benchmark: results are looked up
    ledger = record.ledger
    metric, mode = (SCALAR, "min") if settings.costs.scalarizer else objectives[0]
    *earlier, current = segments(saved)
    if config.resume and tune.Tuner.can_restore(current["tune_path"]):
        # The restored Tuner brings its own tracker, scheduler and searcher (with its state);
        # the tracker writes through this same ledger (see ``Ledger.open``).
        tuner = tune.Tuner.restore(current["tune_path"], trainable, resume_unfinished=True,
                                   resume_errored=False)
    else:
        if earlier:  # an extension: the strategy goes on from where the last part left it
            restore_searcher(plan.searcher, earlier[-1]["tune_path"])
        tracker = getattr(plan.estimator, "tracker", MLflowTracker)(record, space, fidelity,
                                                                    progress, plan.arch_metrics)
        if plan.dedup is not None:
            plan.dedup.on_reuse = tracker.on_duplicate
        for file, content in plan.artifacts.items():  # e.g. zero_cost's scores
            record.log_dict("parent", content, file)
        progress(f"searching: {config.strategy} + {config.scheduler}, {plan.num_trials} "
                 f"trials, {fidelity.describe()}, {config.concurrency} at a time; MLflow run "
                 f"{record.run_id}; folder {ledger.folder}")
        scheduler = scheduler_for(plan, ctx)
        if warning := bracket_warning(scheduler, config.concurrency):
            progress(f"warning: {warning}")
        base, _, name = current["tune_path"].rstrip("/").rpartition("/")
        tuner = tune.Tuner(
            trainable,
            param_space=plan.param_space,
            tune_config=tune.TuneConfig(
                metric=metric, mode=mode, search_alg=plan.searcher, scheduler=scheduler,
                num_samples=current.get("num_trials") or plan.num_trials, reuse_actors=True),
            run_config=tune.RunConfig(
                name=name, storage_path=base, callbacks=[tracker], verbose=0,
                stop=FailureBudget(tracker, config.max_failed_trials),
                # PBT restores a trial from another trial's checkpoint: keep them all for it.
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=None if config.scheduler == "pbt" else 1),
                # A trial whose worker dies resumes from its last epoch's checkpoint.
                # (A lookup that failed fails again: a tabular trial is not retried.)
                failure_config=tune.FailureConfig(
                    max_failures=0 if tabular else config.max_retries)),
        )
    grid = tuner.fit()
    if ledger.live:
        raise SearchInterrupted(f"interrupted with {len(ledger.live)} trials running; resume "
                                f"with: raynas search --resume {ledger.folder}")
    # An extended search's best comes from all its parts (see ``extend``).
    results = [*(r for part in earlier for r in tune.ResultGrid(
        tune.ExperimentAnalysis(part["tune_path"]))), *grid]
    for key in ledger.lost({f"trial/{r.metrics['trial_id']}" for r in results}):
        ledger.write("delete", key)
        progress(f"{key}: lost with the previous driver (not in Tune's saved state); its "
                 "MLflow run is deleted, Tune ran its budget slot again")
    failed = [r for r in results if r.error]
    finished = [r for r in results if not r.error and metric in (r.metrics or {})
                and r.metrics.get(FEASIBLE) is not False]  # the best is a feasible one
    infeasible = [r for r in results if not r.error and (r.metrics or {}).get(FEASIBLE) is False]
    if not finished and infeasible:
        first = infeasible[0].metrics
        raise RaynasError(f"no feasible trial: all {len(infeasible)} that ran violate "
                          f"--constraint (trial {first['trial_id']}: {first[VIOLATIONS]})")
    if not finished:
        first = last_line(str(failed[0].error)) if failed else "no results"
        raise RaynasError(f"all {len(results)} trials failed; first error: {first}")
    best = (max if mode == "max" else min)(finished, key=lambda r: r.metrics[metric])
    if len(objectives) > 1:
        front = log_pareto(record, [r.metrics for r in finished], objectives)
        progress(f"Pareto front: {len(front)} of {len(finished)} trials (pareto.json, pareto.png)")
    arch = plan.estimator.arch(space, best) if plan.estimator else space.decode(best.config)
    val_accuracy = best.metrics[METRIC]
    record.tag("parent", {"raynas.best_trial_id": best.metrics["trial_id"]})
    # Retrained once per best architecture: a resumed search may have done it already, and an
    # extension whose best is new adds a final run (and a model version) of its own.
    models = [op for op in ledger.ops if op["op"] == "model"]
    final_key = next((op["key"] for op in models if arch_hash(op["args"]["arch"]) ==
                      arch_hash(arch)), "final" if not models else f"final/{arch_hash(arch)}")
    final = next((op["args"] for op in models if op["key"] == final_key), None)
    if final is None and tabular:  # no data to retrain on: the table has the test accuracy
        final = {"metrics": tabular_outcome(data, space, arch, results)}
        record.log_metrics("parent", {SIM_TIME: final["metrics"][SIM_TIME]}, len(earlier))
        progress(f"best: trial {best.metrics['trial_id']} val_accuracy={val_accuracy:.4f}; "
                 f"the table's test accuracy {final['metrics']['test_accuracy']:.4f}; "
                 f"{final['metrics'][SIM_TIME]:.0f} s of simulated training")
    elif final is None:
        progress(f"best: trial {best.metrics['trial_id']} val_accuracy={val_accuracy:.4f} "
                 f"({len(finished)} finished, {len(failed)} failed); retraining on train+val "
                 f"for {config.retrain_epochs} epochs")
        record.child(final_key, "final", {"raynas.role": "final", "raynas.arch_hash":
                                          arch_hash(arch), "raynas.trial_id":
                                          best.metrics["trial_id"]})
        task = ray.remote(retrain).options(num_cpus=config.cpus_per_trial,
                                           num_gpus=config.gpus_per_trial)
        retrained = ray.get(task.remote(space, arch, data, config.retrain_epochs, settings))
        for epoch, loss in enumerate(retrained.train_loss, start=1):
            record.log_metrics(final_key, {"train_loss": loss}, epoch)
        files = save_final_model(ledger.folder, retrained.model, data.x_test[:5],
                                 final_key.replace("/", "-"))
        ledger.write("model", final_key, **files, name=experiment, arch=arch,
                     space_yaml=yaml_text,
                     metrics={"test_accuracy": retrained.test_accuracy,
                              "test_loss": retrained.test_loss,
                              "search_val_accuracy": val_accuracy})
        final = ledger.ops[-1]["args"]
    test_accuracy = final["metrics"]["test_accuracy"]
    duplicates = len(plan.dedup.reused) if plan.dedup is not None else 0
    record.log_metrics("parent", {"best_val_accuracy": val_accuracy,
                                  "test_accuracy": test_accuracy, "num_trials": len(results),
                                  "num_failed": len(failed), "num_duplicates": duplicates},
                       len(earlier))  # step: the part of an extended search
    record.log_dict("parent", arch, "best_architecture.json")
    waited = ledger.flush(wait_s=config.tracking_wait)  # the report reads what MLflow has
    record.push()  # the final model's write is applied: a resume must not apply it again
    attach_report(record, progress)  # report.html and its pictures; warns if it cannot
    record.end("parent")
    if pending := ledger.flush(wait_s=0 if waited else config.tracking_wait):
        progress(f"warning: MLflow is still unreachable; {pending} writes (the final model "
                 f"among them) wait in {ledger.folder}: run raynas sync {ledger.folder}")
    return SearchResult(
        experiment=experiment, parent_run_id=record.run_id, num_trials=len(results),
        num_failed=len(failed),
        best={"arch": arch, "trial_id": best.metrics["trial_id"], "val_accuracy": val_accuracy,
              "test_accuracy": test_accuracy, "arch_hash": arch_hash(arch),
              **({SIM_TIME: final["metrics"][SIM_TIME]} if tabular else {})},
        model_uri="none (tabular search)" if tabular else ledger.outputs.get(
            f"{final_key}:model_uri", "pending"),
        tracking_uri=saved["tracking_uri"],
        wall_time_s=round(time.time() - started, 1), ui=ui_command(saved["tracking_uri"]),
        folder=str(ledger.folder),
    )
