"""The one place a ``tune.Tuner`` is assembled, for the search and for every benchmark, so a
benchmark measures exactly what ``raynas search`` runs."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pyarrow.fs
from ray import tune
from ray.tune.search import ConcurrencyLimiter, Searcher, SearchGenerator

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


class TrialBudget(Searcher):
    """The outermost link of a searcher chain: at most ``total`` Tune trials, counted on Tune's
    own list of trials, not on its ``SearchGenerator`` counter.

    Ray 2.60 writes the experiment state (the trials) and the counter to separate files and
    uploads them one after the other, so a driver killed between the two leaves a storage whose
    counter is older than its trials: a resume from it ran more trials than ``--num-trials``
    (9 for 8). Tune offers no hook that shows a searcher the trials it restored, hence the
    callback (``counter``) that hands them over at the start of every step, before Tune asks
    for a new trial. Nothing of it is saved: after a resume the count starts from the trials
    Tune restored, whatever the saved counter says.

    The same lag leaves the chain's saved state waiting for trials that have ended since: the
    ``ConcurrencyLimiter`` would hold their slots for ever (the resume hangs), the strategy
    would never learn their results. At the first step, the trials Tune restored as ended are
    reported to the chain once."""

    def __init__(self, searcher: Searcher, total: int) -> None:
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher, self.total = searcher, total
        self.trials: set[str] = set()  # Tune's trials at the last step, and those made since
        self.counter = _CountTrials(self)
        self.synced = False  # pickled False with the Tuner: True once the first step is seen

    def sync(self, trials: list[Any]) -> None:
        """Tune's trials at the start of a step (``_CountTrials``)."""
        if not self.synced:
            self.synced = True
            live = _live(self.searcher)
            for trial in trials:
                if trial.trial_id in live and trial.status in ("TERMINATED", "ERROR"):
                    self.searcher.on_trial_complete(trial.trial_id,
                                                    result=trial.last_result or None,
                                                    error=trial.status == "ERROR")
        self.trials = {trial.trial_id for trial in trials}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if len(self.trials) >= self.total:
            return Searcher.FINISHED
        config = self.searcher.suggest(trial_id)
        if isinstance(config, dict):
            self.trials.add(trial_id)
        return config

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        ok = self.searcher.set_search_properties(metric, mode, config, **spec)
        self._metric, self._mode = self.searcher.metric, self.searcher.mode
        return ok

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def add_evaluated_point(self, *args: Any, **kwargs: Any) -> None:
        self.searcher.add_evaluated_point(*args, **kwargs)

    def get_state(self) -> dict[str, Any]:
        return {}  # see the class docstring: the count comes from Tune's trials

    def set_state(self, state: dict[str, Any]) -> None:
        pass


class _CountTrials(tune.Callback):
    """Shows ``TrialBudget`` the trials Tune holds (restored ones included) at every step."""

    def __init__(self, budget: TrialBudget) -> None:
        self.budget = budget

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self.budget.sync(trials)


def _live(searcher: Any) -> set[str]:
    """The trials a chain's ``ConcurrencyLimiter`` counts as running."""
    while searcher is not None and not isinstance(searcher, ConcurrencyLimiter):
        searcher = getattr(searcher, "searcher", None)
    return set(searcher.live_trials) if searcher is not None else set()


def build_tuner(trainable: Any, plan: Plan, scheduler: Any, *, metric: str, mode: str,
                storage: str, name: str | None = None, num_samples: int | None = None,
                callbacks: Sequence[Any] = (), stop: Any = None, max_failures: int = 0,
                keep_checkpoints: int | None = 1, time_budget_s: float | None = None) -> Any:
    """A Tuner over ``plan`` with reused actors (~20x less per-trial overhead than Tune's
    default here). ``keep_checkpoints=None`` keeps every checkpoint (PBT restores a trial from
    another's); ``time_budget_s``: Tune stops starting and running trials after it. A
    ``Searcher`` chain is capped by ``TrialBudget`` (exact after a resume), Tune's own counter
    then left unbounded (-1)."""
    samples, searcher, callbacks = num_samples or plan.num_trials, plan.searcher, list(callbacks)
    if isinstance(searcher, Searcher):
        searcher = TrialBudget(searcher, samples)
        samples, callbacks = -1, [*callbacks, searcher.counter]
    return tune.Tuner(
        trainable, param_space=plan.param_space,
        tune_config=tune.TuneConfig(
            metric=metric, mode=mode, search_alg=searcher, scheduler=scheduler,
            num_samples=samples, reuse_actors=True, time_budget_s=time_budget_s),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, callbacks=callbacks, verbose=0, stop=stop,
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
