"""Simulated time: a search's own Tune searcher and scheduler, driven on a tabular benchmark's
clock instead of by Tune.

A table lookup costs nothing, so under Tune a tabular search spends its time in Tune's per-trial
machinery (~80 ms a trial with reused actors): the NAS-Bench-201 protocol, 100 runs of ~100
trials for each strategy, would take hours. Here, as in Syne Tune's blackbox-repository
simulator, an event loop keeps a simulated wall clock and ``workers`` simulated workers: a trial
holds a worker for the training time the table gives it, and its results arrive at the
simulated times their epochs end. Nothing is re-implemented: the searcher and the scheduler are
the very objects ``plan_search`` builds for ``raynas search``, called through Tune's
``Searcher`` and ``TrialScheduler`` interfaces in the order Tune's controller calls them
(``ray.tune.execution.tune_controller``), so with one worker and the same seed the simulator
proposes exactly what a Tune run proposes (``tests/tabular/test_simulate.py``).

New trials start while the clock is under the time budget. What happens to the trial that
overruns it is a choice: by default it runs to its end and counts (as a Tune search's last
trials do); ``drop_overrun`` drops it and ends the search there, as NAS-Bench-201's scripts do
(``R_EA.py``: ``if total_time_cost + time_cost > time_budget: return``).

Schedulers that pause trials (Hyperband's brackets, PBT and BOHB's Hyperband) are refused by
type before anything runs: a paused trial would need the simulator to keep and resume it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ray.tune.schedulers import HyperBandScheduler, PopulationBasedTraining, TrialScheduler
from ray.tune.search import Searcher

from raynas.errors import ConfigError
from raynas.tabular.table import SIM_TIME, Table, replay

#: The result key the clock reads: a trial's simulated training time so far, in seconds.
CLOCK = SIM_TIME
#: Tune's schedulers that pause and resume trials (HyperBandForBOHB and PB2 are subclasses).
PAUSING = (HyperBandScheduler, PopulationBasedTraining)


@dataclass
class SimTrial:
    """What Tune's schedulers read of a trial. ``ray.tune.experiment.Trial`` carries a
    trainable, resources, storage and logging on top; building one costs more than a whole
    simulated trial, and no scheduler of Tune's or ours reads more than these fields."""

    trial_id: str
    config: dict[str, Any]
    status: str = "RUNNING"
    last_result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Finished:
    """A simulated trial: what it reported (all of its epochs, or up to where the scheduler
    stopped it) and when, on the simulated clock, it started and ended."""

    trial_id: str
    config: dict[str, Any]
    results: tuple[dict[str, Any], ...]
    started: float
    ended: float

    @property
    def last(self) -> dict[str, Any]:
        return self.results[-1]


class _Controller:
    """The part of Tune's controller that schedulers call back (``MedianStoppingRule`` asks
    for the live trials)."""

    def __init__(self) -> None:
        self.live: dict[str, SimTrial] = {}

    def get_live_trials(self) -> list[SimTrial]:
        return list(self.live.values())

    get_trials = get_live_trials


def simulate(searcher: Any, scheduler: Any, results_of: Callable[[dict[str, Any]],
             Sequence[dict[str, Any]]], *, metric: str | list[str], mode: str | list[str],
             workers: int = 1, num_trials: int | None = None,
             time_budget_s: float | None = None, time_scale: float = 1.0,
             drop_overrun: bool = False,
             until: Callable[[Finished], bool] | None = None) -> list[Finished]:
    """Run a search on simulated time; its trials in the order they ended.

    ``results_of(config)`` gives what a trial of ``config`` reports, epoch by epoch, each result
    holding ``sim_time_s`` (its training time so far; ``time_scale`` multiplies it). The search
    ends when the searcher has no more proposals, ``num_trials`` have started, or the clock has
    passed ``time_budget_s``, and its trials have ended. ``drop_overrun``: the first trial that
    would end after ``time_budget_s`` is not run, and no other starts. ``until``: no trial
    starts after one that ended with ``until(trial)`` true.
    """
    if not isinstance(searcher, Searcher):
        raise ConfigError(f"the simulator drives a Tune Searcher; {type(searcher).__name__} is "
                          "a search algorithm of another kind (grid and pbt are not simulated)")
    if isinstance(scheduler, PAUSING):
        raise ConfigError(f"--scheduler {type(scheduler).__name__}: pauses trials, which the "
                          "simulator does not model; use fifo, asha or another scheduler that "
                          "continues or stops them")
    if workers < 1:
        raise ConfigError("--workers: must be >= 1")
    searcher.set_search_properties(metric, mode, {})
    scheduler.set_search_properties(metric, mode)
    controller = _Controller()
    events: list[tuple[float, int, str, int]] = []  # (time, order, trial id, result index)
    running: dict[str, tuple[SimTrial, list[dict[str, Any]], float]] = {}
    finished: list[Finished] = []
    now, started, order, exhausted = 0.0, 0, 0, False

    def start() -> bool:
        nonlocal started, order, exhausted
        trial_id = f"sim_{started:05d}"
        config = searcher.suggest(trial_id)
        if config is None:  # the searcher waits for a running trial (ConcurrencyLimiter)
            return False
        if config == Searcher.FINISHED:
            exhausted = True
            return False
        results = [dict(r) for r in results_of(config)]
        if not results:
            raise ConfigError(f"trial {trial_id}: the table gives no result for {config}")
        if (drop_overrun and time_budget_s is not None
                and now + results[-1][CLOCK] * time_scale > time_budget_s):
            exhausted = True
            return False
        started += 1
        trial = SimTrial(trial_id, config)
        controller.live[trial_id] = trial
        scheduler.on_trial_add(controller, trial)
        running[trial_id] = (trial, results, now)
        for index, result in enumerate(results):
            order += 1
            heapq.heappush(events, (now + result[CLOCK] * time_scale, order, trial_id, index))
        return True

    def end(trial: SimTrial, results: list[dict[str, Any]], upto: int, began: float) -> None:
        trial.status = "TERMINATED"
        del controller.live[trial.trial_id], running[trial.trial_id]
        scheduler.on_trial_complete(controller, trial, trial.last_result)
        searcher.on_trial_complete(trial.trial_id, result=trial.last_result)
        finished.append(Finished(trial.trial_id, trial.config, tuple(results[: upto + 1]),
                                 began, now))
        if until is not None and until(finished[-1]):
            nonlocal exhausted
            exhausted = True

    def more() -> bool:
        return (not exhausted and (num_trials is None or started < num_trials)
                and (time_budget_s is None or now < time_budget_s))

    while True:
        while len(running) < workers and more() and start():
            pass
        if not events:
            return finished
        now, _, trial_id, index = heapq.heappop(events)
        if trial_id not in running:  # stopped earlier: its later epochs never happen
            continue
        trial, results, began = running[trial_id]
        result = results[index]
        result.update(trial_id=trial_id, training_iteration=index + 1,
                      time_total_s=result[CLOCK] * time_scale, done=index == len(results) - 1)
        decision = scheduler.on_trial_result(controller, trial, result)
        if decision == TrialScheduler.PAUSE:  # a scheduler of a type not in PAUSING
            raise ConfigError(f"--scheduler {type(scheduler).__name__}: paused a trial, which "
                              "the simulator does not model; use fifo, asha or another "
                              "scheduler that continues or stops them")
        if decision != TrialScheduler.STOP:
            searcher.on_trial_result(trial_id, result)
        trial.last_result = result
        if decision == TrialScheduler.STOP or result["done"]:
            end(trial, results, index, began)


def table_results(table: Table, space: Any, seed: int, max_epochs: int
                  ) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    """``results_of`` for a tabular benchmark: what ``tabular_trial`` would report."""
    return lambda config: replay(table, space, space.decode(config), seed, max_epochs)

