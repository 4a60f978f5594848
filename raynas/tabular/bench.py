"""``raynas bench tabular``: strategies compared on a tabular benchmark (``--table PATH``) at
equal *simulated* training time, as the NAS-Bench-201 paper compared them (Dong & Yang 2020,
Sec. 5): every search runs through Tune exactly as ``raynas search --dataset tabular:PATH``
would, the clock is the table's training time of every epoch any trial reported (as if the
trials had run one after another), and the incumbent is the best validation accuracy of a
trial that reached ``--max-epochs``. Reported at 1/4, 1/2 and all of the budget: that
incumbent's validation accuracy and its test accuracy in the table, mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune

from raynas.bench.common import tune_fit
from raynas.bench.strategies import checked
from raynas.errors import ConfigError
from raynas.estimation import load_space
from raynas.runtime import ray_session
from raynas.space import Space
from raynas.tabular.table import SIM_TIME, Table, check_space, load_table, table_key

FRACTIONS = (0.25, 0.5, 1.0)
SAMPLES_PER_TRIAL = 4  # trial cap per search, x --trials: cheap partial and failed trials


@dataclass
class Point:
    """A trial that reached the full budget, at the simulated time it did."""

    sim_time_s: float
    val_accuracy: float
    test_accuracy: float


def full_time(table: Table, epochs: int) -> float:
    """Mean simulated seconds of one trial trained for ``epochs``."""
    return float(np.mean([c.values["train_time_s"][:epochs].sum()
                          for runs in table.runs.values() for c in runs]))


def search_points(strategy: str, seed: int, space: Space, table: Table, trials: int,
                  max_epochs: int, concurrency: int) -> tuple[list[Point], float]:
    """One tabular search; its full-budget trials in completion order and the simulated time
    it spent in all."""
    spent, last, points = 0.0, {}, []

    class Clock(tune.Callback):
        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            nonlocal spent
            spent += result[SIM_TIME] - last.get(trial.trial_id, 0.0)
            last[trial.trial_id] = result[SIM_TIME]
            if result["epoch"] == max_epochs:
                key = table_key(space, space.decode(trial.config))
                points.append(Point(spent, result["val_accuracy"], table.test_accuracy(key)))

    tune_fit(space, table, strategy=strategy, scheduler="fifo", seed=seed,
             trials=SAMPLES_PER_TRIAL * trials, max_epochs=max_epochs,
             concurrency=concurrency, callbacks=[Clock()])
    return points, spent


def incumbent(points: Sequence[Point], at: float) -> Point | None:
    """The best-validation full trial finished by simulated time ``at``."""
    done = [p for p in points if p.sim_time_s <= at]
    return max(done, key=lambda p: p.val_accuracy) if done else None


def _cell(values: Sequence[float], seeds: int) -> str:
    """mean ± std, and over how many seeds when some had no incumbent yet."""
    if not values:
        return "-"
    std = statistics.pstdev(values) if len(values) > 1 else 0.0
    some = f" ({len(values)}/{seeds})" if len(values) < seeds else ""
    return f"{statistics.fmean(values):.3f} ± {std:.3f}{some}"


def run(path: str, space_name: str, strategies: Sequence[str], seeds: int, trials: int,
        max_epochs: int | None, concurrency: int, budget: float | None, output: Path,
        print_fn: Callable[[str], None] = print) -> dict[str, Any]:
    """The comparison, printed and written to ``output`` (text) and ``output``.json."""
    table = load_table(path, f"--table {path}")
    space = load_space(space_name)
    check_space(space, table, f"--space {space_name}")
    epochs = max_epochs or table.epochs
    if epochs > table.epochs:
        raise ConfigError(f"--max-epochs {epochs}: the table's runs have {table.epochs} epochs")
    budget = budget or trials * full_time(table, epochs)
    if budget <= 0:
        raise ConfigError("--sim-budget: must be > 0")
    names = ["random", *(s for s in strategies if s != "random")]
    report: dict[str, Any] = {"table": path, "space": space.name, "epochs": epochs,
                              "budget_s": budget, "strategies": {}}
    with ray_session(num_cpus=max(2, concurrency)):
        for strategy in names:
            clock = time.time()
            runs = [search_points(strategy, seed, space, table, trials, epochs, concurrency)
                    for seed in range(seeds)]
            report["strategies"][strategy] = {
                "seconds": round(time.time() - clock, 1),
                "spent_s": [round(spent, 1) for _, spent in runs],
                "points": [[vars(p) for p in points] for points, _ in runs]}
    text = _table(report, table, seeds, trials, concurrency)
    print_fn(text)
    output.write_text(text + "\n")
    output.with_suffix(output.suffix + ".json").write_text(json.dumps(report, indent=1))
    return report


def _table(report: dict[str, Any], table: Table, seeds: int, trials: int,
           concurrency: int) -> str:
    budget, epochs = report["budget_s"], report["epochs"]
    best_val = max(np.mean([c.values["val_accuracy"][epochs - 1] for c in runs])
                   for runs in table.runs.values())
    lines = [f"tabular benchmark {report['table']} ({len(table.runs)} architectures), space "
             f"{report['space']}, {epochs} epochs per trial; equal simulated budget "
             f"{budget:,.0f} s (~{trials} full trainings), {seeds} seeds, concurrency "
             f"{concurrency}; the table's best val_accuracy {best_val:.3f}",
             "incumbent (best val_accuracy of a full trial so far): val / its test accuracy in "
             "the table, mean ± std over seeds (over k/n seeds when the others had none yet), "
             "at a share of the budget"]
    head = "".join(f"{f'val @{f:g}':>23}{f'test @{f:g}':>23}" for f in FRACTIONS)
    lines.append(f"{'strategy':<10}{head}{'sim s used':>12}{'wall s':>8}")
    short = False  # a search that ended before spending the budget
    for strategy, found in report["strategies"].items():
        cells = ""
        for fraction in FRACTIONS:
            best = [incumbent([Point(**p) for p in points], fraction * budget)
                    for points in found["points"]]
            cells += f"{_cell([b.val_accuracy for b in best if b], seeds):>23}"
            cells += f"{_cell([b.test_accuracy for b in best if b], seeds):>23}"
        used = statistics.fmean(min(s, budget) for s in found["spent_s"])
        mark = "" if all(s >= budget for s in found["spent_s"]) else "*"
        short = short or bool(mark)
        lines.append(f"{strategy:<10}{cells}{f'{used:,.0f}{mark}':>12}"
                     f"{found['seconds']:>8.0f}")
    if short:
        lines.append(f"* ran out of trials (at most {SAMPLES_PER_TRIAL} x --trials, or every "
                     "architecture of the space seen) before the budget was spent")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    """``raynas bench tabular``: every strategy checked as a search would check it, then the
    comparison on ``--table``."""
    names = checked(args.strategies)
    if args.max_epochs is not None and args.max_epochs < 1:
        raise ConfigError("--max-epochs: must be >= 1")
    if min(args.seeds, args.trials, args.concurrency) < 1:
        raise ConfigError("raynas bench tabular: every count must be >= 1")
    run(args.table, args.space, names, args.seeds, args.trials, args.max_epochs,
        args.concurrency, args.sim_budget, Path(args.output))
    print(f"written: {args.output} (raw points: {args.output}.json)")
