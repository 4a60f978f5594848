"""Benchmarks (``raynas bench …``): each compares against a baseline run in the same process.

The built-in benchmarks register here, one ``register(Benchmark(...))`` each with the function
that declares its flags; their work is in the module named by ``run``, imported only when the
benchmark runs, so building the CLI's parser stays free of torch, Ray and MLflow. The
applications register theirs from their own folders the same way.
"""

from __future__ import annotations

import argparse

from raynas.bench.registry import Benchmark, register, suite


def _latency(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="8 architectures of small_cnn")
    parser.add_argument("--space", default="macro_cnn", help="default: %(default)s")
    parser.add_argument("--dataset", default="digits", help="for the input shape and classes")
    parser.add_argument("--samples", type=int, default=30, help="architectures (default: 30)")
    parser.add_argument("--batch", type=int, default=1, help="default: %(default)s")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default: 1, as a trial with one CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="bench_latency.json",
                        help="JSON report (rows also as .csv; default: %(default)s)")


register(Benchmark("latency", "latency table predictions against measured latencies (MAPE, "
                   "Spearman)", _latency, "raynas.bench.latency:main"))


def _budget(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="mnist1d:75000",
                        help="default: %(default)s (MNIST-1D, 60,000 train + 15,000 test)")
    parser.add_argument("--time-budget", default="20m", help="default: %(default)s")
    parser.add_argument("--seeds", type=int, default=3, help="default: %(default)s")
    parser.add_argument("--output", default="bench_budget.json",
                        help="JSON report (rows also as .csv; default: %(default)s)")


register(Benchmark("budget", "raynas search --time-budget with the budget's plan and without "
                   "(--no-budget-plan): trials, test accuracy, wall time", _budget,
                   "raynas.bench.budget:main"))


def _strategies(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strategies", default="evolution,rl,tpe,gp,bohb,nsga2",
                        help="comma-separated (random is always the baseline; "
                             "default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=12, help="trial budget per search")
    parser.add_argument("--max-epochs", type=int, default=2, help="default: %(default)s")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--space", default="macro_cnn")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--synthetic-budget", type=int, default=300)
    parser.add_argument("--synthetic-seeds", type=int, default=10)
    parser.add_argument("--synthetic-only", action="store_true", help="skip the real trainings")
    parser.add_argument("--output", default="bench_strategies.txt",
                        help="table file (raw curves in FILE.json; default: %(default)s)")


register(Benchmark("strategies", "every strategy against random search", _strategies,
                   "raynas.bench.strategies:main"))


def _mo_asha(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="8 trials x 3 epochs (CI) instead of --trials x --max-epochs")
    parser.add_argument("--seeds", type=int, default=3, help="default: %(default)s")
    parser.add_argument("--trials", type=int, default=16, help="default: %(default)s")
    parser.add_argument("--max-epochs", type=int, default=9, help="default: %(default)s")
    parser.add_argument("--concurrency", type=int, default=2, help="default: %(default)s")
    parser.add_argument("--space", default="small_cnn", help="default: %(default)s")
    parser.add_argument("--dataset", default="digits", help="default: %(default)s")
    parser.add_argument("--output", default="bench_mo_asha.json",
                        help="JSON report (rows also as .csv; default: %(default)s)")


register(Benchmark("mo-asha", "mo-asha vs fifo, same trials, two objectives: hypervolume and "
                   "wall time", _mo_asha, "raynas.bench.mo_asha:main"))




# --- the suite: raynas bench all runs these in turn (ofa's block is the OFA application's) -----
register(Benchmark.of_suite("overhead", "per-trial orchestration overhead of raynas search vs "
                            "plain Ray Tune", "raynas.bench.overhead:main"))
register(Benchmark.of_suite("throughput", "training samples/s of raynas's training loop vs a "
                            "hand-written one", "raynas.bench.throughput:main"))
register(Benchmark.of_suite("asha", "time to near-best accuracy: asha vs fifo, same trial "
                            "budget", "raynas.bench.asha:main"))
register(Benchmark.of_suite("scaling", "trials/minute on 2 Ray nodes vs 1 (started on this "
                            "machine)", "raynas.bench.scaling:main"))


def _all(parser: argparse.ArgumentParser) -> None:
    # Read when the parser is built: the suite includes the plug-ins' benchmarks.
    parser.description = (f"{', '.join(b.name for b in suite())} in turn, then their ratios "
                          "side by side")
    parser.add_argument("--quick", action="store_true", help="reduced sizes (CI)")
    parser.add_argument("--output", default=".",
                        help="folder for bench_NAME.json and .csv (default: the current one)")


register(Benchmark("all", "every benchmark that takes only --quick and --output, in turn, then "
                   "a summary", _all, "raynas.bench.registry:run_all"))


def _oneshot(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="6 cells, 3 epochs, a 6-epoch supernet (CI) instead of the flags")
    parser.add_argument("--archs", type=int, default=16,
                        help="NAS-Bench-201 cells sampled (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=6,
                        help="epochs of each stand-alone training (default: %(default)s)")
    parser.add_argument("--supernet-epochs", type=int, default=24,
                        help="epochs of the supernet's training (default: %(default)s)")
    parser.add_argument("--supernet", default="spos", metavar="spos|enas")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="bench_oneshot.json",
                        help="results (per cell also in FILE.csv; default: %(default)s)")


register(Benchmark("oneshot", "weight sharing: Kendall tau of supernet vs stand-alone accuracy, "
                   "and the cost of each", _oneshot, "raynas.bench.oneshot:main"))


def _estimators(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="6 architectures x 4 epochs (CI) instead of --archs x --epochs")
    parser.add_argument("--archs", type=int, default=24,
                        help="architectures (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=10,
                        help="epochs of the real training, >= 4 (default: %(default)s)")
    parser.add_argument("--proxy", default="synflow",
                        help="the zero-cost proxy that pre-filters (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="bench_estimators.json",
                        help="results (per architecture also in FILE.csv; default: "
                             "%(default)s)")


register(Benchmark("estimators", "cheap performance estimates against real training: rank "
                   "correlations, cost, savings", _estimators, "raynas.bench.estimators:main"))
