"""What every ``raynas bench`` benchmark shares: the machine it ran on, interleaved timing,
the report (printed, ending with ``ratio: X.XX``, and written as JSON + CSV) and the Tune setup
of a search without MLflow.

Each benchmark runs its baseline in the same process and run as raynas and reports the ratio of
the two, so the comparison holds on a machine shared with other work (both sides see the same
load); absolute numbers are printed too, with the load average, to say how noisy they were.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from ray import tune

from raynas import schedulers, strategies
from raynas.estimation import trial_function
from raynas.estimation.fidelity import Fidelity
from raynas.estimation.train import TrialSettings
from raynas.experiment.tuner import build_tuner, plan_search
from raynas.space import Space
from raynas.strategies.base import StrategyContext

Print = Callable[[str], None]


def machine() -> dict[str, Any]:
    """Cores and load: a benchmark on a shared machine says how busy the machine was."""
    load = os.getloadavg()
    return {"cores": os.cpu_count(), "load_avg_1m": round(load[0], 2),
            "gpus": torch.cuda.device_count(), "torch_threads": torch.get_num_threads()}


@dataclass
class Report:
    """One benchmark's outcome. ``ratio`` is raynas relative to its baseline in the direction
    ``meaning`` names; ``rows`` are the raw measurements (the CSV); ``summary`` the derived ones."""

    benchmark: str
    ratio: float
    meaning: str
    target: str
    rows: list[dict[str, Any]]
    machine: dict[str, Any]  # ``machine()`` when the benchmark started
    summary: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    date: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))

    def write(self, output: Path, print_fn: Print = print) -> None:
        """``output`` (JSON: everything) and ``output`` with suffix .csv (the rows), then the
        ratio line - always the last line a benchmark prints."""
        output.parent.mkdir(parents=True, exist_ok=True)
        self.machine["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
        output.write_text(json.dumps(asdict(self), indent=1, default=str) + "\n")
        table = output.with_suffix(".csv")
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        with open(table, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(self.rows)
        m = self.machine
        print_fn(f"machine: {m['cores']} cores, {m['gpus']} GPUs, load average "
                 f"{m['load_avg_1m']} -> {m['load_avg_1m_end']}")
        print_fn(f"written: {output} and {table}")
        print_fn(f"{self.meaning}; target {self.target}")
        print_fn(ratio_line(self.ratio))


def sig(value: float, digits: int = 4) -> float:
    """``value`` to ``digits`` significant digits: what a report keeps of a measurement."""
    return float(f"{value:.{digits}g}")


def ratio_line(ratio: float) -> str:
    return f"ratio: {ratio:.2f}"


def interleaved(runs: dict[str, Callable[[int], float]], repeats: int
                ) -> dict[str, list[float]]:
    """Call each of ``runs`` with the repeat's index once per repeat, alternating their order
    (ABBA...), so drift in the machine's load hits every side alike. Returns each side's values
    in repeat order."""
    names = list(runs)
    values: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            values[name].append(runs[name](repeat))
    return values


def paired_ratio(top: Sequence[float], bottom: Sequence[float]) -> float:
    """Median of the per-repeat ratios ``top[i] / bottom[i]``: robust to a repeat that both
    sides ran under a burst of load."""
    return statistics.median(t / b for t, b in zip(top, bottom, strict=True))


def finite(values: Iterable[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def tune_fit(space: Space, data: Any, *, strategy: str, scheduler: str, seed: int, trials: int,
             max_epochs: int, concurrency: int, callbacks: Sequence[Any] = (),
             cpus: float = 1.0, gpus: float = 0.0,
             objectives: Sequence[tuple[str, str]] = (("val_accuracy", "max"),)) -> Any:
    """One search through Tune exactly as ``raynas search`` sets it up (the same trainable,
    searcher chain, scheduler and ``build_tuner``), minus MLflow and the retraining: what a
    benchmark of the search itself (not of tracking) runs. Returns Tune's ``ResultGrid``."""
    (metric, mode), *_ = objectives
    ctx = StrategyContext.of(space, objectives, seed=seed, num_trials=trials,
                             concurrency=concurrency, max_budget=max_epochs, scheduler=scheduler)
    plan, chosen = plan_search(strategies.get(strategy), schedulers.get(scheduler), ctx)
    trainable = tune.with_resources(
        tune.with_parameters(trial_function(data), space=space, data=data,
                             settings=TrialSettings(Fidelity(max_epochs), seed, cpus, gpus)),
        {"cpu": cpus, "gpu": gpus})
    with tempfile.TemporaryDirectory(prefix="raynas-bench-") as folder:
        tuner = build_tuner(trainable, plan, chosen, metric=metric, mode=mode,
                            storage=str(Path(folder).resolve()), callbacks=callbacks)
        return tuner.fit()  # its metrics are in memory; its checkpoints go with the folder
