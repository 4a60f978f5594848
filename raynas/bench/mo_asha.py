"""``raynas bench mo-asha``: MO-ASHA against FIFO on the same trials, two objectives
(val_accuracy:max, params:min).

Both sides run the same search through Tune (random search, seeded: the same architectures in
the same order), one with ``--scheduler mo-asha`` and one with ``fifo``, for the same number of
trials; the sides alternate which goes first from seed to seed. Per seed it records the wall time
and the hypervolume of the final front - every trial's last result, as ``raynas search`` builds
its Pareto front, so a trial MO-ASHA stopped counts with what it had reached.

Hypervolume: ``moocore.hypervolume`` (exact, maintained; Optuna's implementation is private,
``optuna._hypervolume``). Both objectives are minimised and scaled to [0, 1] per seed: the error
``1 - val_accuracy``, and ``params`` divided by the largest parameter count any trial of that
seed had (either side: the same architectures). Reference point (1.1, 1.1), the nadir plus 10 %,
so that a front's extreme points add volume too; the largest possible value is 1.21.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import moocore

from raynas.bench.common import Print, Report, interleaved, machine, paired_ratio, tune_fit
from raynas.data import load_dataset
from raynas.errors import ConfigError
from raynas.estimation import load_space
from raynas.runtime import ray_session
from raynas.space import Space

OBJECTIVES = (("val_accuracy", "max"), ("params", "min"))
SIDES = ("mo-asha", "fifo")
REFERENCE = (1.1, 1.1)


def fit(space: Space, data: Any, scheduler: str, seed: int, trials: int, max_epochs: int,
        concurrency: int) -> list[dict[str, Any]]:
    """One two-objective random search through Tune as ``raynas search`` sets it up; each
    trial's last result."""
    grid = tune_fit(space, data, strategy="random", scheduler=scheduler, seed=seed,
                    trials=trials, max_epochs=max_epochs, concurrency=concurrency,
                    objectives=OBJECTIVES)
    return [r.metrics for r in grid if not r.error and r.metrics]


def hypervolume(results: list[dict[str, Any]], largest_params: float) -> float:
    """The normalised hypervolume of ``results`` (see the module docstring)."""
    points = [(1 - r["val_accuracy"], r["params"] / largest_params) for r in results]
    return float(moocore.hypervolume(points, ref=REFERENCE))


def front_size(results: list[dict[str, Any]]) -> int:
    return int(moocore.is_nondominated([(-r["val_accuracy"], r["params"]) for r in results])
               .sum())


def run(seeds: int, trials: int, max_epochs: int, concurrency: int, space_name: str,
        dataset: str, output: Path, print_fn: Print = print) -> Report:
    """Every seed on both sides; prints a table, the hypervolume ratio and ``ratio: X.XX``
    (wall time, mo-asha / fifo: the median of the per-seed ratios) and writes the report."""
    host = machine()
    space = load_space(space_name)
    results: dict[str, list[list[dict[str, Any]]]] = {side: [] for side in SIDES}

    def side(scheduler: str):
        def once(seed: int) -> float:
            data = load_dataset(dataset, seed=seed)
            started = time.perf_counter()
            results[scheduler].append(fit(space, data, scheduler, seed, trials, max_epochs,
                                          concurrency))
            return time.perf_counter() - started
        return once

    with ray_session("local", num_cpus=max(2, concurrency)):
        walls = interleaved({s: side(s) for s in SIDES}, seeds)

    rows = []
    for seed in range(seeds):
        largest = max(r["params"] for s in SIDES for r in results[s][seed])
        for s in SIDES:
            trial_results = results[s][seed]
            rows.append({
                "seed": seed, "scheduler": s, "wall_s": round(walls[s][seed], 2),
                "hypervolume": round(hypervolume(trial_results, largest), 4),
                "front_size": front_size(trial_results), "trials": len(trial_results),
                "stopped_early": sum(r["budget"] < max_epochs for r in trial_results),
                "epochs_trained": sum(r["budget"] for r in trial_results),
                "best_val_accuracy": round(max(r["val_accuracy"] for r in trial_results), 4)})
    by = {s: [r for r in rows if r["scheduler"] == s] for s in SIDES}
    hv_ratios = [a["hypervolume"] / b["hypervolume"] for a, b in zip(*by.values(), strict=True)]
    summary = {
        "wall_ratio_median": round(paired_ratio(walls["mo-asha"], walls["fifo"]), 3),
        "hypervolume_ratio_mean": round(statistics.fmean(hv_ratios), 3),
        "hypervolume_ratio_min": round(min(hv_ratios), 3),
        "epochs_ratio": round(sum(r["epochs_trained"] for r in by["mo-asha"])
                              / sum(r["epochs_trained"] for r in by["fifo"]), 3),
    }
    print_fn(f"mo-asha vs fifo: {space_name} on {dataset}, random search, {trials} trials x "
             f"<= {max_epochs} epochs, {seeds} seeds, {concurrency} at a time; objectives "
             f"{', '.join(f'{m}:{mode}' for m, mode in OBJECTIVES)}")
    columns = list(rows[0])
    print_fn("  ".join(f"{c:>17}" for c in columns))
    for row in rows:
        print_fn("  ".join(f"{row[c]!s:>17}" for c in columns))
    print_fn(f"epochs trained, mo-asha / fifo: {summary['epochs_ratio']:.2f}")
    print_fn(f"hypervolume ratio (mo-asha / fifo, mean over seeds): "
             f"{summary['hypervolume_ratio_mean']:.2f} "
             f"(min {summary['hypervolume_ratio_min']:.2f})")
    report = Report(
        benchmark="mo-asha", ratio=summary["wall_ratio_median"],
        meaning="wall time of a search, mo-asha / fifo, same trials (median of per-seed "
                "ratios; lower is better)",
        target="< 1 with a hypervolume ratio near 1", rows=rows, machine=host, summary=summary,
        settings={"seeds": seeds, "trials": trials, "max_epochs": max_epochs,
                  "concurrency": concurrency, "space": space_name, "dataset": dataset,
                  "strategy": "random", "reference_point": REFERENCE})
    report.write(output, print_fn)
    return report


def main(args: argparse.Namespace) -> None:
    """``raynas bench mo-asha``: its flags checked, then ``run``."""
    trials, max_epochs = (8, 3) if args.quick else (args.trials, args.max_epochs)
    if min(args.seeds, trials, args.concurrency) < 1 or max_epochs < 2:
        raise ConfigError("raynas bench mo-asha: every count must be >= 1, --max-epochs >= 2 "
                          "(MO-ASHA's first rung is epoch 1)")
    run(args.seeds, trials, max_epochs, args.concurrency, args.space, args.dataset,
        Path(args.output))
