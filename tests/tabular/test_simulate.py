"""The simulated-time backend (raynas.tabular.simulate): the same searcher and scheduler
objects a Tune run uses, driven on the table's clock, propose the same architectures as a real
Tune run with one worker, and the clock, the workers and the budget behave as stated."""

from __future__ import annotations

import itertools
import random

import pytest
from ray import tune
from ray.tune.schedulers import HyperBandForBOHB, HyperBandScheduler, PopulationBasedTraining

from raynas import schedulers, strategies
from raynas.bench.common import tune_fit
from raynas.errors import ConfigError
from raynas.estimation import load_space
from raynas.experiment.tuner import plan_search
from raynas.strategies.base import StrategyContext
from raynas.tabular.simulate import simulate, table_results
from raynas.tabular.table import load_table, table_key

EPOCHS = 4
SPACE = "nb201_small"


@pytest.fixture(scope="module")
def curves(tmp_path_factory):
    """A table of every nb201_small cell with 2 seeds of 4-epoch curves: made-up numbers (only
    the machinery is under test), with different training times so trials end out of order."""
    import pandas as pd

    space, rng, rows = load_space(SPACE), random.Random(0), []
    for arch in space.grid():
        key = table_key(space, arch)
        quality = rng.random()
        for seed, epoch in itertools.product(range(2), range(1, EPOCHS + 1)):
            val = quality * (1 - 0.5 ** epoch) + 0.02 * rng.random()
            rows.append({"arch": key, "seed": seed, "epoch": epoch, "val_accuracy": val,
                         "test_accuracy": val, "train_time_s": 10 + 20 * quality})
    path = tmp_path_factory.mktemp("sim") / "curves.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return load_table(path)


def plan(strategy: str, scheduler: str, seed: int, trials: int, workers: int = 1):
    ctx = StrategyContext.of(load_space(SPACE), [("val_accuracy", "max")], seed=seed,
                             num_trials=trials, concurrency=workers, max_budget=EPOCHS,
                             scheduler=scheduler)
    return plan_search(strategies.get(strategy), schedulers.get(scheduler), ctx)


def simulated(table, strategy: str, scheduler: str, seed: int, trials: int, workers: int = 1,
              **kwargs):
    searcher_plan, chosen = plan(strategy, scheduler, seed, trials, workers)
    return simulate(searcher_plan.searcher, chosen, table_results(table, load_space(SPACE),
                    seed, EPOCHS), metric="val_accuracy", mode="max", workers=workers,
                    num_trials=trials, **kwargs)


@pytest.mark.parametrize(("strategy", "scheduler"), [
    ("random", "fifo"), ("tpe", "fifo"), ("evolution", "asha"), ("rl", "fifo"),
    ("bananas", "fifo"), ("pnas", "fifo"), ("local_search", "fifo")])
def test_one_worker_proposes_what_a_tune_run_proposes(ray_local, curves, strategy, scheduler):
    # local search proposes 10 random starts first: 16 trials reach its neighbourhoods.
    space, trials = load_space(SPACE), 16 if strategy == "local_search" else 10
    seen: list[tuple[str, int]] = []

    class Record(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            seen.append((table_key(space, space.decode(trial.config)),
                         trial.last_result["epoch"]))

    tune_fit(space, curves, strategy=strategy, scheduler=scheduler, seed=3, trials=trials,
             max_epochs=EPOCHS, concurrency=1, callbacks=[Record()])
    sim = simulated(curves, strategy, scheduler, 3, trials)
    # The same architectures in the same order, each stopped after the same epoch.
    assert [(table_key(space, space.decode(f.config)), f.last["epoch"]) for f in sim] == seen
    if scheduler == "asha":
        assert any(epoch < EPOCHS for _, epoch in seen)  # ASHA did stop some


def test_the_clock_runs_trials_side_by_side_on_the_workers(curves):
    one = simulated(curves, "random", "fifo", 0, 12)
    four = simulated(curves, "random", "fifo", 0, 12, workers=4)
    # One worker: trials end one after another, each after its own training time.
    for before, after in itertools.pairwise(one):
        assert after.started == pytest.approx(before.ended)
    for f in one:
        assert f.ended - f.started == pytest.approx(f.last["sim_time_s"])
    # Four: never more than four at a time, and the work takes about a quarter as long.
    for f in four:
        assert sum(g.started <= f.started < g.ended for g in four) <= 4
    assert four[-1].ended < 0.45 * one[-1].ended


def test_the_time_budget_stops_new_trials_and_lets_running_ones_end(curves):
    full = simulated(curves, "random", "fifo", 0, 20)
    budget = full[5].ended + 1
    cut = simulated(curves, "random", "fifo", 0, 20, time_budget_s=budget)
    assert len(cut) == 7  # six ended before the budget, the seventh had started
    assert cut[-1].ended > budget and cut[-1].started < budget
    assert [f.config for f in cut] == [f.config for f in full[:7]]


def test_a_searcher_of_another_kind_is_refused(curves):
    grid, chosen = plan("grid", "fifo", 0, 5)
    with pytest.raises(ConfigError, match="grid and pbt are not simulated"):
        simulate(grid.searcher, chosen, table_results(curves, load_space(SPACE), 0, EPOCHS),
                 metric="val_accuracy", mode="max")


def test_drop_overrun_ends_the_search_before_the_query_that_would_pass_the_budget(curves):
    full = simulated(curves, "random", "fifo", 0, 20)
    budget = full[5].ended + 1
    cut = simulated(curves, "random", "fifo", 0, 20, time_budget_s=budget, drop_overrun=True)
    assert [f.config for f in cut] == [f.config for f in full[:6]]  # the seventh is dropped
    assert cut[-1].ended <= budget


@pytest.mark.parametrize("scheduler", [
    HyperBandScheduler(), HyperBandForBOHB(),
    PopulationBasedTraining(hyperparam_mutations={"lr": [0.1, 0.01]})])
def test_pausing_schedulers_are_refused_before_anything_runs(curves, scheduler):
    searcher_plan, _ = plan("random", "fifo", 0, 5, workers=2)
    asked = []
    inner = searcher_plan.dedup.searcher
    original = inner.suggest
    inner.suggest = lambda trial_id: asked.append(trial_id) or original(trial_id)
    with pytest.raises(ConfigError, match="pauses trials, which the simulator does not model"):
        simulate(searcher_plan.searcher, scheduler, table_results(curves, load_space(SPACE), 0,
                 EPOCHS), metric="val_accuracy", mode="max", workers=2)
    assert not asked


def test_until_starts_no_trial_after_the_one_that_met_it(curves):
    full = simulated(curves, "random", "fifo", 0, 20)
    target = full[4].config
    cut = simulated(curves, "random", "fifo", 0, 20, until=lambda f: f.config == target)
    assert [f.config for f in cut] == [f.config for f in full[:5]]
