"""The ``raynas bench overhead | throughput | asha | scaling | all`` suite: each benchmark's
full and ``--quick`` (CI) sizes. Light on imports: the CLI builds its parser from it."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raynas.bench.common import Print, Report

#: name -> (help, full size, quick size); a size is the keyword arguments of the module's ``run``.
#: Quick sizes skip the warm-ups: their numbers are for sanity checks, not for reading.
BENCHMARKS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "overhead": ("per-trial orchestration overhead of raynas search vs plain Ray Tune",
                 {"trials": 24, "repeats": 5, "concurrency": 2},
                 {"trials": 4, "repeats": 1, "concurrency": 2, "warm_up": False}),
    "throughput": ("training samples/s of raynas's training loop vs a hand-written one",
                   {"repeats": 7, "epochs": 3, "threads": 1},
                   {"repeats": 3, "epochs": 1, "threads": 1}),
    "asha": ("time to near-best accuracy: asha vs fifo, same trial budget",
             {"seeds": 3, "trials": 12, "max_epochs": 9, "concurrency": 2},
             {"seeds": 1, "trials": 3, "max_epochs": 3, "concurrency": 2}),
    "scaling": ("trials/minute on 2 Ray nodes vs 1 (started on this machine)",
                {"trials": 8, "max_epochs": 20},
                {"trials": 4, "max_epochs": 3, "warm_up": False}),
    "ofa": ("Once-for-All: train once + specialise 3 latency targets vs 3 constrained "
            "searches; Kendall tau of inherited vs from-scratch accuracy, predictor RMSE",
            {"epochs_per_phase": 5, "samples": 100, "subnets": 12, "scratch_epochs": 8,
             "search_trials": 24, "evaluations": 300},
            {"epochs_per_phase": 1, "samples": 8, "subnets": 3, "scratch_epochs": 1,
             "search_trials": 2, "evaluations": 20}),
}


def run(name: str, quick: bool, output: Path, print_fn: Print = print) -> Report:
    _, full, small = BENCHMARKS[name]
    module = importlib.import_module(f"raynas.bench.{name}")
    return module.run(**(small if quick else full), output=output, print_fn=print_fn)


def run_all(quick: bool, folder: Path, print_fn: Print = print) -> dict[str, Report]:
    """Every benchmark in turn, each into ``folder``/bench_NAME.json (+ .csv), then a summary."""
    reports = {}
    for name in BENCHMARKS:
        print_fn(f"\n== raynas bench {name}{' --quick' if quick else ''}")
        reports[name] = run(name, quick, folder / f"bench_{name}.json", print_fn)
    print_fn("\n== summary")
    for name, report in reports.items():
        print_fn(f"{name:<11} ratio {report.ratio:6.2f}  target {report.target:<28} "
                 f"({report.meaning.removeprefix('ratio = ')})")
    return reports
