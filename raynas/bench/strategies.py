"""``raynas bench strategies``: every strategy against random search on the same trial budget.

Two objectives. A *synthetic* one over the decision space whose optimum is known (the share of
decisions that match a target architecture), so convergence is measured without noise: regret
is ``1 - score`` and reaching the optimum means finding the target. And a *real* one: trials
that train on ``digits`` through Tune, reporting the best validation accuracy after k trials
(an anytime curve) as mean ± std over seeds, and its ratio to random search's.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune

from raynas import schedulers, strategies
from raynas.bench.common import tune_fit
from raynas.data import load_dataset
from raynas.errors import ConfigError
from raynas.estimation import load_space
from raynas.experiment.resolve import check_combination
from raynas.runtime import ray_session
from raynas.space import Arch, Space
from raynas.strategies.base import StrategyContext

SYNTHETIC_SPACE: dict[str, Any] = {
    "name": "synthetic",
    "model": "macro",
    "description": "1-3 layers of 5 ops x 3 widths x 2 connections (27,930 architectures)",
    "space": {
        "stem_channels": 16,
        "layers": {"repeat": [1, 3], "block": {
            "op": {"choice": ["conv_3x3", "conv_5x5", "dw_conv_3x3", "max_pool_3x3",
                              "identity"]},
            "channels": {"choice": [16, 32, 64]},
            "stride": 1,
            "connection": {"choice": ["series", "skip"]},
        }},
    },
}
SYNTHETIC_TARGET: dict[str, Any] = {
    "layers.count": 3,
    "layers.0.op": "dw_conv_3x3", "layers.0.channels": 64, "layers.0.connection": "skip",
    "layers.1.op": "max_pool_3x3", "layers.1.channels": 32, "layers.1.connection": "series",
    "layers.2.op": "conv_5x5", "layers.2.channels": 16, "layers.2.connection": "skip",
}
METRIC = "score"


def synthetic_objective(space: Space, target: dict[str, Any]) -> Callable[[Arch], float]:
    """Share of decisions (over both flat encodings) where ``arch`` agrees with ``target``:
    1.0 exactly at the target, so the optimum is known and regret is ``1 - score``."""

    def score(arch: Arch) -> float:
        flat = space.encode(arch)
        keys = set(flat) | set(target)
        return sum(flat.get(k) == target.get(k) for k in keys) / len(keys)

    return score


def drive(searcher: Any, objective: Callable[[Arch], float], space: Space, budget: int,
          concurrency: int = 1, stop_at: float | None = None) -> list[float]:
    """Run ``searcher`` on ``objective`` without Ray, as Tune would: up to ``concurrency``
    trials outstanding, the oldest completing first. Returns the best score after each trial
    (the anytime curve); ends early once ``stop_at`` is reached."""
    searcher.set_search_properties(METRIC, "max", {})
    outstanding: list[tuple[str, Arch]] = []
    best: list[float] = []
    started = 0
    while len(best) < budget:
        while started < budget and len(outstanding) < concurrency:
            config = searcher.suggest(f"t{started:05d}")
            if config is None or config == "FINISHED":
                break
            outstanding.append((f"t{started:05d}", space.decode(config)))
            started += 1
        if not outstanding:
            break
        trial_id, arch = outstanding.pop(0)
        value = objective(arch)
        searcher.on_trial_complete(trial_id, {METRIC: value, "training_iteration": 1})
        best.append(max(value, best[-1]) if best else value)
        if stop_at is not None and best[-1] >= stop_at:
            break
    return best


def synthetic_run(strategy: str, seed: int, budget: int, concurrency: int = 1) -> list[float]:
    """The anytime curve of ``strategy`` on the synthetic objective (stops at the optimum)."""
    space = load_space(SYNTHETIC_SPACE)
    ctx = StrategyContext(space, METRIC, "max", seed, budget, concurrency)
    return drive(strategies.get(strategy).build(ctx).searcher,
                 synthetic_objective(space, SYNTHETIC_TARGET), space, budget, concurrency,
                 stop_at=1.0)


def evaluations_to_optimum(curve: Sequence[float]) -> int | None:
    return next((i + 1 for i, v in enumerate(curve) if v >= 1.0), None)


# --- the real objective: trials that train through Tune ------------------------------------------
def tune_run(strategy: str, seed: int, space: Space, data: Any, trials: int, max_epochs: int,
             concurrency: int) -> list[float]:
    """Best validation accuracy after each finished trial (in completion order) of one search
    run through Tune exactly as ``raynas search`` runs it, minus MLflow and the retraining."""
    order: list[float] = []

    class Record(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any):
            order.append((trial.last_result or {}).get("val_accuracy", 0.0))

    tune_fit(space, data, strategy=strategy, scheduler="fifo", seed=seed, trials=trials,
             max_epochs=max_epochs, concurrency=concurrency, callbacks=[Record()])
    return list(itertools.accumulate(order, max))


@dataclass
class Row:
    strategy: str
    curves: list[list[float]]
    seconds: float

    def at(self, k: int) -> list[float]:
        """Each seed's value after ``k`` trials (its last value if it ran fewer)."""
        return [c[min(k, len(c)) - 1] for c in self.curves if c]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def synthetic_table(strategies: Sequence[str], seeds: int, budget: int,
                    concurrency: int) -> tuple[str, dict[str, Any]]:
    """Evaluations to reach the known optimum (median over seeds; runs that do not reach it
    count as ``budget``, so random's number is a lower bound) and the mean regret."""
    lines = [f"synthetic objective (known optimum, {budget} evaluations, {seeds} seeds, "
             f"concurrency {concurrency})",
             f"{'strategy':<10} {'reached':>8} {'evals to optimum (median)':>26} "
             f"{'regret at ' + str(budget // 4):>14} {'x random':>9}"]
    found: dict[str, Any] = {}
    for strategy in strategies:
        curves = [synthetic_run(strategy, seed, budget, concurrency) for seed in range(seeds)]
        evals = [evaluations_to_optimum(c) or budget for c in curves]
        reached = sum(evaluations_to_optimum(c) is not None for c in curves)
        regret = statistics.fmean(1 - c[min(budget // 4, len(c)) - 1] for c in curves)
        found[strategy] = {"evals": evals, "reached": reached, "regret": regret}
    base = statistics.median(found["random"]["evals"]) if "random" in found else None
    # Runs that never reach the optimum count as the budget: random's median is then a lower
    # bound, and so is every ratio to it.
    at_least = "random" in found and found["random"]["reached"] < seeds
    for strategy, f in found.items():
        median = statistics.median(f["evals"])
        bound = ">=" if f["reached"] < seeds else ""
        ratio = f"{'>=' if at_least else ''}{base / median:.1f}x" if base else "-"
        lines.append(f"{strategy:<10} {f['reached']:>5}/{seeds:<2} {bound + f'{median:g}':>26} "
                     f"{f['regret']:>14.3f} {ratio:>9}")
    return "\n".join(lines), found


def real_table(strategies: Sequence[str], seeds: int, trials: int, max_epochs: int,
               concurrency: int, space_name: str, dataset: str
               ) -> tuple[str, dict[str, Any]]:
    """Anytime curve: mean ± std over seeds of the best validation accuracy after k trials,
    and the ratio of each mean to random search's."""
    space = load_space(space_name)
    rows: list[Row] = []
    for strategy in strategies:
        started = time.time()
        curves = []
        for seed in range(seeds):
            data = load_dataset(dataset, seed=seed)
            curves.append(tune_run(strategy, seed, space, data, trials, max_epochs,
                                   concurrency))
        rows.append(Row(strategy, curves, time.time() - started))
    ks = sorted({max(1, trials // 4), max(1, trials // 2), trials})
    base = next((r for r in rows if r.strategy == "random"), None)
    head = "".join(f"{'best@' + str(k):>22}" for k in ks)
    lines = [f"real objective: {space_name} on {dataset}, {trials} trials x {max_epochs} "
             f"epochs, {seeds} seeds, concurrency {concurrency}; best val_accuracy mean ± std "
             "(ratio to random)",
             f"{'strategy':<10}{head}{'wall s':>9}"]
    out: dict[str, Any] = {}
    for row in rows:
        cells = ""
        for k in ks:
            mean, std = _mean_std(row.at(k))
            ratio = mean / statistics.fmean(base.at(k)) if base else float("nan")
            cells += f"{f'{mean:.3f} ± {std:.3f} ({ratio:.2f})':>22}"
        lines.append(f"{row.strategy:<10}{cells}{row.seconds:>9.0f}")
        out[row.strategy] = {"curves": row.curves, "seconds": round(row.seconds, 1)}
    return "\n".join(lines), out


def run(strategies: Sequence[str], seeds: int, trials: int, max_epochs: int, concurrency: int,
        space: str, dataset: str, synthetic_budget: int, synthetic_seeds: int, output: Path,
        real: bool = True, print_fn: Callable[[str], None] = print) -> dict[str, Any]:
    """Both tables, printed and written to ``output`` (text) and ``output``.json (raw curves)."""
    names = ["random", *(s for s in strategies if s != "random")]
    searchers = [s for s in names if s not in ("grid",)]
    # Optuna's GPSampler refits its GP on every suggestion (~1 s at 300 points): too slow for
    # hundreds of synthetic evaluations x seeds, so it is in the real table only.
    text, synthetic = synthetic_table([s for s in searchers if s != "gp"], synthetic_seeds,
                                      synthetic_budget, 1)
    print_fn(text)
    report = {"synthetic": synthetic}
    tables = [text]
    if real:
        with ray_session(num_cpus=max(2, concurrency)):
            text, report["real"] = real_table(searchers, seeds, trials, max_epochs,
                                              concurrency, space, dataset)
        print_fn(text)
        tables.append(text)
    output.write_text("\n\n".join(tables) + "\n")
    output.with_suffix(output.suffix + ".json").write_text(json.dumps(report, indent=1))
    return report


def checked(names: str) -> list[str]:
    """``--strategies``, each checked as a search would check it with one objective."""
    found = [s.strip() for s in names.split(",") if s.strip()]
    for name in found:
        check_combination(strategies.get(name), schedulers.get("fifo"), 1)
    return found


def main(args: argparse.Namespace) -> None:
    """``raynas bench strategies``: every strategy checked, then the comparison on the two
    objectives."""
    names = checked(args.strategies)
    if args.max_epochs < 1:
        raise ConfigError("--max-epochs: must be >= 1")
    if min(args.seeds, args.trials, args.concurrency, args.synthetic_budget,
           args.synthetic_seeds) < 1:
        raise ConfigError("raynas bench strategies: every count must be >= 1")
    run(names, args.seeds, args.trials, args.max_epochs, args.concurrency, args.space,
        args.dataset, args.synthetic_budget, args.synthetic_seeds, Path(args.output),
        real=not args.synthetic_only)
    print(f"written: {args.output} (raw curves: {args.output}.json)")
