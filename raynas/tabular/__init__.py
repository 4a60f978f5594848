"""Tabular benchmarks (docs/tabular.md): a table of trained results (``tabular:PATH``,
NAS-Bench-201's ``nb201:NAME``) that trials look up instead of training, on a simulated clock."""

from __future__ import annotations

from raynas.data import Source, register_source
from raynas.estimation.task import Task, register_task
from raynas.objectives.metrics import Metric, register_metric

register_task(Task(
    "tabular", "raynas.estimation.tabular:tabular_trial", None,
    outcome="raynas.estimation.tabular:tabular_outcome", models=None, fidelities=(),
    holds="is a table of results", check="raynas.estimation.tabular:check_search", retry=False))
register_source(Source("tabular", "raynas.estimation.tabular:load_source", "tabular:PATH",
                       help="a table of trained results (CSV, JSON or Parquet)"))
register_source(Source("nb201", "raynas.estimation.nb201:load_source", "nb201:NAME",
                       help="NAS-Bench-201's table: cifar10, cifar100 or imagenet16-120"))
register_metric(Metric("sim_time_s"))  # a lookup's simulated training time so far
