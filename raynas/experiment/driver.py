"""One search end to end: resolve -> plan -> Tuner (strategy + scheduler + trainable) -> best
architecture -> retrain on train+val -> test accuracy -> MLflow model and registry; and the ways
to go on with a search later (``--resume``, ``extend``, ``sync``)."""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.stopper import CombinedStopper

import raynas
from raynas import strategies
from raynas.config import TIME_ATTR, SearchConfig
from raynas.errors import ConfigError, RaynasError, SearchInterrupted
from raynas.estimation import trial_function
from raynas.estimation.costs import EPOCH_S, CostSettings
from raynas.estimation.fidelity import Fidelity, ProxyTask
from raynas.estimation.train import TOO_SLOW, TrialSettings, calibrate
from raynas.experiment.budget import Budget, BudgetPlan, apply_plan, epoch_samples, plan_budget
from raynas.experiment.resolve import Resolved, resolve
from raynas.experiment.state import AUTO, SearchState, auto_folder, folder_of, storage_of
from raynas.experiment.tuner import build_tuner, plan_search, restore_searcher
from raynas.objectives.constraints import FEASIBLE, VIOLATIONS
from raynas.objectives.scalarize import (
    CALIBRATION_SAMPLES,
    SCALAR,
    Scalarizer,
    make_scalarizer,
    needs_sample,
)
from raynas.report.search import attach as attach_report
from raynas.runtime import ray_session, stderr
from raynas.schedulers import bracket_warning
from raynas.schedulers.no_learning import REASON as NO_LEARNING
from raynas.schedulers.no_learning import NotLearning
from raynas.space import arch_hash
from raynas.space import space_yaml as to_yaml
from raynas.strategies.base import Plan
from raynas.tracking.final_model import save_final_model
from raynas.tracking.front import log_pareto
from raynas.tracking.ledger import Ledger
from raynas.tracking.mirror import FOLDER as MIRROR
from raynas.tracking.mirror import STATE, Mirror
from raynas.tracking.session import tracking_session
from raynas.tracking.store import connect, git_sha, last_line, tracking_uri, ui_command
from raynas.tracking.tracker import FailureBudget, MLflowTracker, SearchRecord

METRIC = "val_accuracy"
UNTIL_THE_BUDGET_ENDS = 100_000  # trials of a planned --time-budget without --num-trials
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


@dataclass
class Running:
    """One search while it runs: what each of its steps reads."""

    resolved: Resolved
    plan: Plan
    scheduler: Any  # the Tune scheduler
    record: SearchRecord
    state: SearchState
    experiment: str
    budget: Budget
    progress: Callable[[str], None]
    budget_plan: BudgetPlan | None = None

    @property
    def num_trials(self) -> int:
        """Tune's ``num_samples``: the plan's, or - a planned time budget without
        ``--num-trials`` - as many as the budget allows (candidates rejected by their cost take
        a slot each)."""
        if self.budget_plan is not None and self.resolved.config.num_trials is None:
            return UNTIL_THE_BUDGET_ENDS
        return self.plan.num_trials


def search(config: SearchConfig, progress: Callable[[str], None] = stderr,
           resolved: Resolved | None = None, started: float | None = None) -> SearchResult:
    """Run a search as configured, or - with ``config.tracking.resume`` - finish an
    interrupted one. ``resolved``: what ``resolve(config)`` returned, when the caller ran it
    already; ``started``: when the command started (``--time-budget`` counts from there)."""
    started = started or time.time()
    resume = config.tracking.resume
    state = SearchState.read(resume) if resume not in (None, AUTO) else None
    if state:
        config = state.settings(config)
    resolved = resolved or resolve(config)
    experiment = config.tracking.experiment or resolved.space.name
    if resume == AUTO:
        found = auto_folder(config.tracking.storage, experiment)
        if (found / STATE).is_file():
            state = SearchState.read(str(found))
            progress(f"--resume auto: {found} holds this search; resuming it")
            given, config = config, state.settings(config)
            if given.replace(resume=None) != config.replace(resume=None):
                progress("warning: --resume auto: the saved settings apply, not these flags")
                resolved = resolve(config)
        else:
            progress(f"--resume auto: no search in {found} yet; starting it there")
    uri = state.tracking_uri if state else tracking_uri(config.tracking.tracking_uri)
    client = connect(uri)
    space, data = resolved.space, resolved.data
    progress(f"space {space.name} ({space.size():.3g} architectures), {data.summary()}")

    with ray_session(config.resources.address, progress):
        gpus = config.resources.gpus_per_trial
        if gpus > 0 and ray.cluster_resources().get("GPU", 0) == 0:
            raise ConfigError(f"--gpus-per-trial {gpus:g}: the Ray cluster has "
                              "no GPUs")
        budget = Budget(resolved.time_budget_s, started)
        budget_plan = _budget_plan(resolved, state, budget, progress)
        if budget_plan is not None:
            resolved = apply_plan(resolved, budget_plan)
        plan, scheduler = plan_search(resolved.strategy, resolved.scheduler,
                                      resolved.context())
        if state:
            record = SearchRecord.open(state.folder, uri, state.experiment_id, progress,
                                       state.mirrored())
            _forget_unknown_runs(record, progress)
            record.ledger.write("reopen", "parent")
            progress(f"resuming {state.tune_path} (MLflow run {record.run_id}); "
                     f"{record.ledger.flush(wait_s=10)} MLflow writes still pending")
        else:
            state, record = _start(resolved, plan, experiment, client, uri, progress)
            if budget_plan is not None:
                state.plan = asdict(budget_plan)
                state.save()
                record.tag("parent", budget_plan.tags())
        # how the search ended is in MLflow and on the storage too
        with tracking_session(record, wait_s=config.tracking.tracking_wait, progress=progress):
            return _run(Running(resolved, plan, scheduler, record, state, experiment, budget,
                                progress, budget_plan))


def _budget_plan(resolved: Resolved, state: SearchState | None, budget: Budget,
                 progress: Callable[[str], None]) -> BudgetPlan | None:
    """The plan of a search with a time budget (see ``raynas.experiment.budget``): made now, or
    the one a resumed search made, so its trials go on under the same rules."""
    if state is not None:
        return BudgetPlan(**state.plan) if state.plan else None
    config = resolved.config
    if budget.seconds is None or not config.budget_plan or resolved.task.problem is None:
        return None  # no budget, or no plan wanted, or networks the shared loop cannot time
    target = config.num_trials or resolved.context().trials
    budget_plan = plan_budget(resolved, budget, target, progress)
    if budget_plan is not None:
        progress(budget_plan.describe())
    return budget_plan


def _start(resolved: Resolved, plan: Plan, experiment: str, client: Any, uri: str,
           progress: Callable[[str], None]) -> tuple[SearchState, SearchRecord]:
    """A new search: its folder, its MLflow parent run and its ``raynas.json``."""
    config = resolved.config
    # --resume auto: a fixed name, so that the same command finds it again.
    name = experiment if config.tracking.resume == AUTO else (
        f"{experiment}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}")
    base = storage_of(config.tracking.storage)
    folder = folder_of(base, name)
    tune_path = f"{base.rstrip('/')}/{name}" if "://" in base else str(folder)
    remote = f"{tune_path}/{MIRROR}" if "://" in base else None
    if remote:  # a missing bucket is an error now, before there is a run in MLflow
        Mirror.of(remote, folder).check()
    record = SearchRecord.start(client, experiment, folder.resolve(), tags={
        "raynas.name": name, "raynas.role": "search", "raynas.space": resolved.space.name,
        "raynas.strategy": config.strategy, "raynas.scheduler": config.scheduler,
        "raynas.dataset": config.dataset, "raynas.seed": str(config.seed),
        "raynas.version": raynas.__version__, "raynas.git_sha": git_sha() or "unknown",
        "raynas.objectives": ",".join(f"{m}:{mode}" for m, mode in resolved.objectives),
        **{f"raynas.{k}": v for k, v in plan.notes.items()},
        **({"raynas.mirror": remote} if remote else {}),
    }, params={**{k: v for k, v in config.flat().items()
                  if v is not None and k not in ("strategy_options", "fixed")},
               **{f"strategy_option.{k}": v for k, v in asdict(resolved.options).items()},
               **{f"space.{k}": v for k, v in (config.fixed or {}).items()}},
        space_yaml=to_yaml(resolved.space), warn=progress)
    state = SearchState(str(folder), uri, record.ledger.experiment_id,
                        config=asdict(config), tune_path=tune_path, mirror=remote)
    record.mirror = state.mirrored()
    state.save()
    return state, record


def _forget_unknown_runs(record: SearchRecord, progress: Callable[[str], None]) -> None:
    """Before a search resumes: delete the trial runs its ledger does not know. With a remote
    storage the ledger resumed from is the copy taken at Tune's last experiment checkpoint, so
    runs created after it are unknown to Tune's state as well: those trials run again, under
    new runs. Runs it knows may have steps logged after that copy: noted, so that a trial
    resumed from an earlier checkpoint does not log them twice."""
    ledger = record.ledger
    # (a run the applied count knows is known too: a ledger damaged at its end lost its create)
    keys = {op["key"] for op in ledger.ops} | set(ledger.runs)
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


def extend(target: str, num_trials: int, tracking: str | None = None,
           progress: Callable[[str], None] = stderr) -> SearchResult:
    """Give a finished search ``num_trials`` more trials: the same strategy state, MLflow parent
    run and search folder, new trial runs; the best of all of them is the result."""
    if num_trials < 1:
        raise ConfigError("--num-trials: must be >= 1")
    folder = find_search(target, tracking)
    state = SearchState.read(folder)
    config = state.search_config()
    if not strategies.get(config.strategy).extendable:
        raise ConfigError(f"extend: a {config.strategy} search has no strategy state to go on "
                          "from; run it again with a larger --num-trials")
    ledger = Ledger.open(state.folder, state.tracking_uri, state.experiment_id, progress)
    if ledger.status.get("parent") != "FINISHED":
        raise ConfigError(f"extend: the search in {folder} has not finished; finish it first: "
                          f"raynas search --resume {folder}")
    parts = state.parts
    state.segments = [*parts, {"tune_path": f"{parts[0]['tune_path']}-ext{len(parts)}",
                               "num_trials": num_trials}]
    state.save()
    progress(f"extending {folder} by {num_trials} trials (part {len(parts) + 1})")
    return search(config.replace(resume=state.folder), progress)


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
    local = folder_of(remote.rsplit("/", 2)[0], tags["raynas.name"]).resolve()
    if not Mirror.of(remote, local).pull():
        raise ConfigError(f"{target}: its search folder is neither here ({folder}) nor in "
                          f"{remote}")
    return str(local)


def sync(path: str, wait_s: float = 60.0, progress: Callable[[str], None] = stderr) -> int:
    """Apply a search's pending MLflow writes (after an outage); returns how many remain."""
    state = SearchState.read(path, search=False)
    connect(state.tracking_uri)
    record = SearchRecord.open(state.folder, state.tracking_uri, state.experiment_id, progress,
                               state.mirrored())
    before = record.ledger.pending
    left = record.settle(wait_s)  # and on the storage: what is applied now is not applied again
    progress(f"{before - left} MLflow writes applied, {left} pending")
    return left


def _cost_settings(run: Running) -> CostSettings:
    """What trials measure and check, and - when several objectives are scalarised - the
    scalariser. Its ranges are measured once per search, where the trials run, and kept in the
    search's folder, so a resumed search goes on comparing trials on the same scale."""
    resolved, state, record, progress = run.resolved, run.state, run.record, run.progress
    config, objectives, data = resolved.config, resolved.objectives, resolved.data
    timed = EPOCH_S in {c.metric for c in resolved.constraints} | {m for m, _ in objectives}
    costs = CostSettings(resolved.constraints, config.costs.latency_batch,
                         config.costs.latency_device, epoch_samples=epoch_samples(
                             data, resolved.fidelity.task.data) if timed else 0.0)
    if resolved.scalarize is None:
        return replace(costs, search_metrics=tuple(m for m, _ in objectives))
    if state.scalarizer is not None:
        scalarizer = Scalarizer.from_json(state.scalarizer)
    else:
        sample = []
        if sampled := needs_sample(objectives, data.num_classes):
            progress(f"scalarize: measuring {CALIBRATION_SAMPLES} random architectures for the "
                     f"range of {', '.join(sampled)}")
            args = (resolved.space, data, replace(costs, constraints=()),
                    config.resources.gpus_per_trial, config.resources.cpus_per_trial,
                    config.seed)  # the whole space's range
            if {"latency_ms", "peak_memory_mb"} & set(sampled):  # where the trials run
                sample = ray.get(ray.remote(calibrate).options(
                    num_cpus=config.resources.cpus_per_trial,
                    num_gpus=config.resources.gpus_per_trial
                ).remote(*args, timed=True))
            else:  # params and FLOPs are the same anywhere
                sample = calibrate(*args, timed=False)
        scalarizer = make_scalarizer(resolved.scalarize, objectives, resolved.weights,
                                     data.num_classes, sample)
        state.scalarizer = asdict(scalarizer)
        state.save()
        record.tag("parent", {"raynas.scalarize": resolved.scalarize})
        record.log_dict("parent", scalarizer.describe(), "scalarization.json")
    return replace(costs, scalarizer=scalarizer, search_metrics=(SCALAR,))


def _trainable(run: Running, settings: TrialSettings, tune_path: str) -> Any:
    """The trial function with its data and resources; weight sharing (oneshot, darts) brings
    its own, whose trials score with shared weights (oneshot trains its supernet here)."""
    resolved, plan = run.resolved, run.plan
    config = resolved.config
    return tune.with_resources(
        plan.estimator.trainable(resolved.space, resolved.data, settings, run.record, tune_path,
                                 run.progress) if plan.estimator else
        tune.with_parameters(trial_function(resolved.data), space=resolved.space,
                             data=resolved.data, settings=settings),
        {"cpu": config.resources.cpus_per_trial, "gpu": config.resources.gpus_per_trial})


def _fit(run: Running, settings: TrialSettings) -> list[Any]:
    """Run (or resume) the current part of the search in Tune; every part's results."""
    resolved, plan, record, budget, progress = (run.resolved, run.plan, run.record, run.budget,
                                                run.progress)
    config, ledger = resolved.config, record.ledger
    metric, mode = resolved.metric
    *earlier, current = run.state.parts
    trainable = _trainable(run, settings, current["tune_path"])
    if config.tracking.resume and tune.Tuner.can_restore(current["tune_path"]):
        # The restored Tuner brings its own tracker, scheduler and searcher (with its state);
        # the tracker writes through this same ledger (see ``Ledger.open``).
        tuner = tune.Tuner.restore(current["tune_path"], trainable, resume_unfinished=True,
                                   resume_errored=False)
    else:
        if earlier:  # an extension: the strategy goes on from where the last part left it
            restore_searcher(plan.searcher, earlier[-1]["tune_path"])
        tracker = getattr(plan.estimator, "tracker", MLflowTracker)(
            record, resolved.space, resolved.fidelity, progress, plan.arch_metrics)
        if plan.dedup is not None:
            plan.dedup.on_reuse = tracker.on_duplicate
        for file, content in plan.artifacts.items():  # e.g. zero_cost's scores
            record.log_dict("parent", content, file)
        trials_s = budget.for_trials()
        count = ("trials until the budget ends" if run.num_trials == UNTIL_THE_BUDGET_ENDS
                 else f"{run.num_trials} trials")
        progress(f"searching: {config.strategy} + {config.scheduler}, {count}, "
                 f"{resolved.fidelity.describe()}, {config.resources.concurrency} at a time"
                 f"{f', trials stop after {trials_s:.0f} s' if trials_s else ''}; MLflow run "
                 f"{record.run_id}; folder {ledger.folder}")
        if warning := bracket_warning(run.scheduler, config.resources.concurrency):
            progress(f"warning: {warning}")
        base, _, name = current["tune_path"].rstrip("/").rpartition("/")
        tuner = build_tuner(
            trainable, plan, run.scheduler, metric=metric, mode=mode, storage=base, name=name,
            num_samples=current.get("num_trials") or run.num_trials, callbacks=[tracker],
            stop=_stoppers(run, tracker),
            max_failures=config.failures.max_retries if resolved.task.retry else 0,
            keep_checkpoints=None if resolved.scheduler.population else 1,
            time_budget_s=trials_s)
    grid = tuner.fit()
    if ledger.live and budget.trials_over:
        # Tune's time budget ended these trials, and ends them without a callback.
        for key in sorted(ledger.live):
            record.tag(key, {"raynas.stopped_early": "true", "raynas.stopped_by": "time-budget"})
            record.end(key, "KILLED")
        progress(f"--time-budget: {len(ledger.live)} running trials stopped")
        ledger.live.clear()
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
    return results


def _stoppers(run: Running, tracker: Any) -> Any:
    """What stops trials besides the scheduler: ``--max-failed-trials``, and the rule that
    stops a trial that learns nothing (``NotLearning``), for problems that know their chance
    level."""
    failures = FailureBudget(tracker, run.resolved.config.failures.max_failed_trials)
    problem = run.resolved.task.load("problem")
    chance = problem.chance(run.resolved.data) if problem and problem.chance else None
    on_stopped = getattr(tracker, "on_stopped", None)
    if chance is None or on_stopped is None:
        return failures
    return CombinedStopper(failures, NotLearning(
        chance, lambda trial_id, why: on_stopped(trial_id, NO_LEARNING, why)))


def _best(run: Running, results: list[Any]) -> tuple[Any, list[Any], list[Any]]:
    """The best feasible trial, the finished ones and the failed ones; the Pareto front of a
    multi-objective search is logged."""
    resolved, record = run.resolved, run.record
    metric, mode = resolved.metric
    failed = [r for r in results if r.error]
    finished = [r for r in results if not r.error and metric in (r.metrics or {})
                and r.metrics.get(FEASIBLE) is not False]  # the best is a feasible one
    infeasible = [r for r in results if not r.error and (r.metrics or {}).get(FEASIBLE) is False]
    if not finished and infeasible:
        first = infeasible[0].metrics
        raise RaynasError(f"no feasible trial: all {len(infeasible)} that ran violate "
                          f"--constraint (trial {first['trial_id']}: {first[VIOLATIONS]})")
    if not finished and run.budget.trials_over and not failed:
        raise RaynasError(f"--time-budget {run.budget.seconds:.0f} s: spent before a trial "
                          f"reported (start-up and planning took "
                          f"{time.time() - run.budget.started:.0f} s of it); give more time")
    if not finished:
        first = last_line(str(failed[0].error)) if failed else "no results"
        raise RaynasError(f"all {len(results)} trials failed; first error: {first}")
    best = (max if mode == "max" else min)(finished, key=lambda r: _rank(r.metrics, metric, mode))
    if len(resolved.objectives) > 1:
        front = log_pareto(record, [r.metrics for r in finished], resolved.objectives)
        run.progress(f"Pareto front: {len(front)} of {len(finished)} trials (pareto.json, "
                     "pareto.png)")
    record.tag("parent", {"raynas.best_trial_id": best.metrics["trial_id"]})
    return best, finished, failed


def _spending(run: Running, results: list[Any]) -> dict[str, int]:
    """How the trials ended, for the summary and ``budget.json``: what a time budget was
    spent on."""
    ends = {"finished": 0, "stopped by the scheduler": 0, f"stopped ({NO_LEARNING})": 0,
            f"stopped ({TOO_SLOW})": 0, "rejected by cost (epoch_s)": 0,
            "rejected by --constraint": 0, "failed": 0}
    for result in results:
        metrics = result.metrics or {}
        tags = run.record.ledger.tags.get(f"trial/{metrics.get('trial_id')}", {})
        if result.error:
            ends["failed"] += 1
        elif by := tags.get("raynas.stopped_by"):
            ends[f"stopped ({by})"] = ends.get(f"stopped ({by})", 0) + 1
        elif metrics.get(FEASIBLE) is False and not metrics.get(TIME_ATTR):
            cost = EPOCH_S in str(metrics.get(VIOLATIONS, ""))
            ends["rejected by cost (epoch_s)" if cost else "rejected by --constraint"] += 1
        elif tags.get("raynas.stopped_early"):
            ends["stopped by the scheduler"] += 1
        else:
            ends["finished"] += 1
    return ends


def _rank(metrics: dict[str, Any], metric: str, mode: str) -> tuple[float, float]:
    """A trial's rank: its metric, ties broken by its validation loss. On small data the
    accuracy is coarse (a validation split of 10 inputs has 11 values), so several trials often
    share the best one; the loss still tells them apart."""
    loss = metrics.get("val_loss")
    loss = math.inf if loss is None or math.isnan(loss) else loss
    return (metrics[metric], -loss) if mode == "max" else (metrics[metric], loss)


def _run(run: Running) -> SearchResult:
    """Fit, pick the best, retrain it (unless a resumed search did) and log it all."""
    resolved, plan, record, state, budget, progress = (run.resolved, run.plan, run.record,
                                                       run.state, run.budget, run.progress)
    config, space, data, ledger = resolved.config, resolved.space, resolved.data, record.ledger
    settings = TrialSettings(resolved.fidelity, config.seed, config.resources.cpus_per_trial,
                             config.resources.gpus_per_trial,
                             _cost_settings(run),
                             checkpoint_last=resolved.scheduler.population is not None)
    results = _fit(run, settings)
    trials_s = time.time() - budget.started
    best, finished, failed = _best(run, results)
    arch = plan.estimator.arch(space, best) if plan.estimator else space.decode(best.config)
    val_accuracy = best.metrics[METRIC]
    part = len(state.parts) - 1  # the MLflow step of this part's summary metrics
    # Retrained once per best architecture: a resumed search may have done it already, and an
    # extension whose best is new adds a final run (and a model version) of its own.
    models = [op for op in ledger.ops if op["op"] == "model"]
    final_key = next((op["key"] for op in models if arch_hash(op["args"]["arch"]) ==
                      arch_hash(arch)), "final" if not models else f"final/{arch_hash(arch)}")
    final = next((op["args"] for op in models if op["key"] == final_key), None)
    spent = f"{trials_s:.0f} s to the trials' end (start-up included)"
    task = resolved.task
    if final is None and task.final is None:  # nothing to retrain: the result is looked up
        final = {"metrics": task.load("outcome")(data, space, arch, results)}
        looked_up = {k: v for k, v in final["metrics"].items() if not k.startswith("test_")}
        record.log_metrics("parent", looked_up, part)
        progress(f"best: trial {best.metrics['trial_id']} val_accuracy={val_accuracy:.4f} "
                 f"({len(finished)} finished, {len(failed)} failed); not retrained, looked up: "
                 + ", ".join(f"{k}={v:,.0f}" if abs(v) >= 1000 else f"{k}={v:.4g}"
                             for k, v in final["metrics"].items()))
    elif final is None:
        # Train+val is larger than the share of train a trial saw: an epoch of the retraining
        # takes that much longer.
        epoch_s = (best.metrics.get("time_total_s", 0) / max(1, best.metrics.get(
            "training_iteration", 1))) * (1 + data.split_sizes[1] / data.split_sizes[0]) / (
            best.metrics.get("data_fraction") or 1.0)
        epochs, share = budget.retraining(config.retrain_epochs, epoch_s)
        progress(f"best: trial {best.metrics['trial_id']} val_accuracy={val_accuracy:.4f} "
                 f"({len(finished)} finished, {len(failed)} failed); retraining on "
                 + (f"train+val for {epochs} epochs" if share >= 1 else
                    f"{share:.0%} of train+val for 1 epoch")
                 + (f" (of {config.retrain_epochs}, ~{epoch_s:.0f} s each: --time-budget)"
                    if epochs < config.retrain_epochs or share < 1 else ""))
        record.child(final_key, "final", {"raynas.role": "final", "raynas.arch_hash":
                                          arch_hash(arch), "raynas.trial_id":
                                          best.metrics["trial_id"]})
        retraining = ray.remote(task.load("final")).options(
            num_cpus=config.resources.cpus_per_trial, num_gpus=config.resources.gpus_per_trial)
        retrain_started = time.time()
        final_settings = replace(settings, fidelity=Fidelity(epochs, task=ProxyTask(data=share)))
        retrained = ray.get(retraining.remote(space, arch, data, epochs, final_settings))
        spent += f", retraining {time.time() - retrain_started:.0f} s ({epochs} epochs)"
        for epoch, loss in enumerate(retrained.train_loss, start=1):
            record.log_metrics(final_key, {"train_loss": loss}, epoch)
        files = save_final_model(ledger.folder, retrained.model, retrained.example,
                                 final_key.replace("/", "-"))
        if retrained.picture is not None:  # predicted slices or boxes beside the truth
            picture = f"{final_key.replace('/', '-')}_{retrained.picture_name}"
            (ledger.folder / picture).write_bytes(retrained.picture)
            ledger.write("artifact", final_key, file=picture)
        ledger.write("model", final_key, **files, name=run.experiment, arch=arch,
                     space_yaml=to_yaml(space),
                     metrics={**retrained.metrics(), "search_val_accuracy": val_accuracy,
                              "retrain_epochs": epochs})
        final = ledger.ops[-1]["args"]
    spending = _spending(run, results)
    progress("trials: " + ", ".join(f"{n} {what}" for what, n in spending.items() if n))
    if budget.seconds is not None:
        progress(f"--time-budget {budget.seconds:.0f} s: {spent}; {budget.left:.0f} s left")
        record.log_dict("parent", {"budget_s": budget.seconds, "trials_s": round(trials_s, 1),
                                   "total_s": round(time.time() - budget.started, 1),
                                   "trials": spending}, "budget.json")
    test_accuracy = final["metrics"]["test_accuracy"]
    duplicates = len(plan.dedup.reused) if plan.dedup is not None else 0
    record.log_metrics("parent", {"best_val_accuracy": val_accuracy,
                                  "test_accuracy": test_accuracy, "num_trials": len(results),
                                  "num_failed": len(failed), "num_duplicates": duplicates},
                       part)  # step: the part of an extended search
    record.log_dict("parent", arch, "best_architecture.json")
    # The report reads what MLflow has; once the final model's write is applied and on the
    # storage, a resume does not apply it again. The tracking session ends the parent run.
    record.settle(config.tracking.tracking_wait)
    attach_report(record, progress)  # report.html and its pictures; warns if it cannot
    return SearchResult(
        experiment=run.experiment, parent_run_id=record.run_id, num_trials=len(results),
        num_failed=len(failed),
        best={"arch": arch, "trial_id": best.metrics["trial_id"], "val_accuracy": val_accuracy,
              "test_accuracy": test_accuracy, "arch_hash": arch_hash(arch),
              # the final model's other test scores: test_auc, test_dice (segmentation), ...
              **{k: v for k, v in final["metrics"].items() if k.startswith("test_")},
              **(final["metrics"] if task.final is None else {})},
        model_uri=f"none ({task.name} search)" if task.final is None else
        ledger.outputs.get(
            f"{final_key}:model_uri", "pending"),
        tracking_uri=state.tracking_uri,
        wall_time_s=round(time.time() - budget.started, 1),
        ui=ui_command(state.tracking_uri), folder=str(ledger.folder),
    )
