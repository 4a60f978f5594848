"""The one place a ``tune.Tuner`` is assembled, for the search and for every benchmark, so a
benchmark measures exactly what ``raynas search`` runs."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pyarrow.fs
from ray import tune
from ray.tune.search import SearchGenerator

from raynas.schedulers import Scheduler
from raynas.strategies.base import Plan, Strategy, StrategyContext


def plan_search(strategy: Strategy, scheduler: Scheduler, ctx: StrategyContext
                ) -> tuple[Plan, Any]:
    """The searcher plan and the Tune scheduler a search runs with: a scheduler that brings its
    own population (pbt) replaces the strategy's searcher, and a strategy that brings its own
    scheduler (bohb) replaces ``--scheduler``. A context without options (a benchmark's) gets
    the strategy's defaults."""
    if ctx.options is None:
        ctx = replace(ctx, options=strategy.parse_options())
    plan = scheduler.population(ctx) if scheduler.population else strategy.build(ctx)
    return plan, plan.scheduler or scheduler.build(ctx)


def build_tuner(trainable: Any, plan: Plan, scheduler: Any, *, metric: str, mode: str,
                storage: str, name: str | None = None, num_samples: int | None = None,
                callbacks: Sequence[Any] = (), stop: Any = None, max_failures: int = 0,
                keep_checkpoints: int | None = 1, time_budget_s: float | None = None) -> Any:
    """A Tuner over ``plan`` with reused actors (~20x less per-trial overhead than Tune's
    default here). ``keep_checkpoints=None`` keeps every checkpoint (PBT restores a trial from
    another's); ``time_budget_s``: Tune stops starting and running trials after it."""
    return tune.Tuner(
        trainable, param_space=plan.param_space,
        tune_config=tune.TuneConfig(
            metric=metric, mode=mode, search_alg=plan.searcher, scheduler=scheduler,
            num_samples=num_samples or plan.num_trials, reuse_actors=True,
            time_budget_s=time_budget_s),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, callbacks=list(callbacks), verbose=0, stop=stop,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=keep_checkpoints),
            # A trial whose worker dies resumes from its last epoch's checkpoint.
            failure_config=tune.FailureConfig(max_failures=max_failures)))


def restore_searcher(searcher: Any, tune_path: str) -> None:
    """Load the state a finished Tune experiment saved for ``searcher`` (and its wrappers) into
    this freshly built searcher, as Tune's own restore would."""
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
