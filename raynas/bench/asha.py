"""``raynas bench asha``: how much sooner ASHA gets near the best architecture than FIFO.

For each seed, two searches with the same trial budget run through the Tune setup of
``raynas search`` (``common.tune_fit``: same trainable, searcher, schedulers): one with ``fifo``
(every trial trains ``max_epochs``), one with ``asha`` (trials stopped at rungs 1, 3, 9, ...).
The strategy is seeded random search, so both propose the same architectures in the same order,
and each trial's training is seeded, so a trial ASHA lets run reports what FIFO's copy reports:
the schedulers differ only in which trials they stop. The target of a seed is the best
validation accuracy either search reached, less 0.5 percentage points; each search's time to
target is the wall time from its start to its first result at or above the target (never, if
it does not get there - ASHA can stop the trial that would have). ratio = FIFO's time / ASHA's
(median over seeds): how many times sooner ASHA is there; 0 for a seed ASHA never got there.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path
from typing import Any

from ray import tune

from raynas.bench.common import Print, Report, machine, tune_fit
from raynas.data import load_dataset
from raynas.estimation import load_space
from raynas.runtime import ray_session

#: A small space with real spread: depth, ops, widths, and training hyperparameters that range
#: from good to poor (lr 1e-4 with SGD hardly learns in a few epochs) - what ASHA is for.
SPACE: dict[str, Any] = {
    "name": "bench_asha",
    "model": "macro",
    "description": "1-2 small layers, lr 1e-4..3e-2, adam|sgd, batch 32|64|128",
    "space": {
        "stem_channels": 16,
        "layers": {"repeat": [1, 2], "block": {
            "op": {"choice": ["conv_3x3", "dw_conv_3x3", "max_pool_3x3"]},
            "channels": {"choice": [16, 32]},
            "stride": {"choice": [1, 2]},
            "connection": {"choice": ["series", "skip"]},
        }},
        "train": {"lr": {"float": [1.0e-4, 3.0e-2], "log": True},
                  "batch_size": {"choice": [32, 64, 128]},
                  "optimizer": {"choice": ["adam", "sgd"]}},
    },
}
TOLERANCE = 0.005  # "within 0.5 %": percentage points of validation accuracy
FULL: dict[str, Any] = {"seeds": 3, "trials": 12, "max_epochs": 9, "concurrency": 2}
QUICK: dict[str, Any] = {"seeds": 1, "trials": 3, "max_epochs": 3, "concurrency": 2}


def timed_search(scheduler: str, seed: int, space: Any, data: Any, trials: int,
                 max_epochs: int, concurrency: int) -> tuple[list[tuple[float, float]], float]:
    """Every result of one search as (seconds since the search started, val_accuracy), and
    the search's wall time."""
    started = time.perf_counter()
    results: list[tuple[float, float]] = []

    class Clock(tune.Callback):
        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            results.append((time.perf_counter() - started, result["val_accuracy"]))

    tune_fit(space, data, strategy="random", scheduler=scheduler, seed=seed, trials=trials,
             max_epochs=max_epochs, concurrency=concurrency, callbacks=[Clock()])
    return results, time.perf_counter() - started


def time_to(results: list[tuple[float, float]], target: float) -> float:
    return next((t for t, accuracy in results if accuracy >= target), math.inf)


def run(seeds: int, trials: int, max_epochs: int, concurrency: int, output: Path,
        print_fn: Print = print) -> Report:
    space = load_space(SPACE)
    host = machine()
    print_fn(f"asha: random search of {trials} trials x <= {max_epochs} epochs on digits, "
             f"{concurrency} at a time, {seeds} seeds; fifo and asha alternate which runs "
             "first")
    rows: list[dict[str, Any]] = []
    ratios: list[float] = []
    with ray_session("local", num_cpus=max(2, concurrency)):
        for seed in range(seeds):
            data = load_dataset("digits", seed=seed)
            order = ("fifo", "asha") if seed % 2 == 0 else ("asha", "fifo")
            runs = {s: timed_search(s, seed, space, data, trials, max_epochs, concurrency)
                    for s in order}
            target = max(a for results, _ in runs.values() for _, a in results) - TOLERANCE
            reached = {s: time_to(results, target) for s, (results, _) in runs.items()}
            ratios.append(reached["fifo"] / reached["asha"])
            for s in ("fifo", "asha"):
                results, wall = runs[s]
                rows.append({"seed": seed, "scheduler": s, "results": len(results),
                             "best_val_accuracy": round(max(a for _, a in results), 4),
                             "target": round(target, 4),
                             "time_to_target_s": (round(reached[s], 2)
                                                  if math.isfinite(reached[s]) else None),
                             "wall_s": round(wall, 2)})
            shown = {s: f"{t:.1f} s" if math.isfinite(t) else "never" for s, t in
                     reached.items()}
            print_fn(f"seed {seed}: target val_accuracy {target:.4f}; fifo {shown['fifo']} "
                     f"(search {runs['fifo'][1]:.1f} s), asha {shown['asha']} (search "
                     f"{runs['asha'][1]:.1f} s); {ratios[-1]:.2f}x")
    walls = {s: statistics.median(r["wall_s"] for r in rows if r["scheduler"] == s)
             for s in ("fifo", "asha")}
    summary = {"ratio_per_seed": [round(r, 3) if math.isfinite(r) else None for r in ratios],
               "asha_reached_target": sum(r > 0 for r in ratios),
               "median_search_s": walls,
               "search_time_ratio": round(walls["fifo"] / walls["asha"], 3)}
    print_fn(f"whole searches: fifo {walls['fifo']:.1f} s, asha {walls['asha']:.1f} s "
             f"(median); asha reached the target in {summary['asha_reached_target']}/{seeds} "
             "seeds")
    report = Report("asha", statistics.median(ratios),
                    "ratio = fifo time to within 0.5 points of the best val_accuracy / asha's "
                    "(higher is better, median over seeds)", "> 1", rows, host, summary,
                    {"seeds": seeds, "trials": trials, "max_epochs": max_epochs,
                     "concurrency": concurrency, "strategy": "random", "space": SPACE,
                     "dataset": "digits", "tolerance": TOLERANCE})
    report.write(output, print_fn)
    return report


def main(args: argparse.Namespace) -> None:
    """``raynas bench asha [--quick]``: ``run`` at its full or its CI size."""
    run(**(QUICK if args.quick else FULL), output=Path(args.output))
