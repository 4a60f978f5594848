"""``raynas bench budget``: the same ``raynas search --time-budget`` command with the budget's
plan and without it (``--no-budget-plan``: all the data, no cap on an epoch, rungs in epochs),
seed by seed, interleaved, each a fresh ``raynas search`` process timed from its start as a user
would time it. Printed per run: trials, how they ended, the retrained model's test accuracy and
the wall time against the budget; the ratio is the mean test accuracy with the plan over the one
without."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow

from raynas.bench.common import Report, machine, sig
from raynas.experiment.resolve import parse_duration

ARMS = {"plan": [], "no plan": ["--no-budget-plan"]}


def _search(args: argparse.Namespace, seed: int, flags: list[str], folder: Path) -> dict[str, Any]:
    """One ``raynas search`` in a process of its own; its JSON result, wall time and how its
    trials ended (``budget.json``, read back from MLflow)."""
    command = [sys.executable, "-m", "raynas.cli", "search", "--dataset", args.dataset,
               "--time-budget", args.time_budget, "--seed", str(seed), "--json",
               "--storage", str(folder / "ray"),
               "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}", *flags]
    folder.mkdir(parents=True)
    started = time.time()
    # In its folder: MLflow puts a SQLite store's artifacts under ./mlruns of the current one.
    done = subprocess.run(command, capture_output=True, text=True, cwd=folder)
    wall = time.time() - started
    if done.returncode != 0:
        return {"wall_s": round(wall, 1), "error": done.stderr.strip().splitlines()[-1:]}
    result = json.loads(done.stdout)
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    spent = mlflow.artifacts.load_dict(f"runs:/{result['parent_run_id']}/budget.json")
    return {"wall_s": round(wall, 1), "trials": result["num_trials"],
            "test_accuracy": result["best"]["test_accuracy"], "ends": spent["trials"]}


def main(args: argparse.Namespace) -> int:
    budget_s = parse_duration(args.time_budget)
    start = machine()
    rows = []
    with tempfile.TemporaryDirectory(prefix="raynas-bench-budget-") as tmp:
        for seed in range(args.seeds):
            arms = list(ARMS) if seed % 2 == 0 else list(reversed(ARMS))  # ABBA
            for arm in arms:
                folder = Path(tmp) / f"{arm.replace(' ', '-')}-{seed}"
                row = {"arm": arm, "seed": seed, **_search(args, seed, ARMS[arm], folder)}
                row["wall_over_budget"] = sig(row["wall_s"] / budget_s, 3)
                rows.append(row)
                ends = ", ".join(f"{n} {what}" for what, n in row.get("ends", {}).items() if n)
                print(f"{arm:8s} seed {seed}: " + (
                    f"{row['trials']} trials ({ends}), test accuracy "
                    f"{row['test_accuracy']:.4f}" if "error" not in row else
                    f"failed: {row['error']}") + f"; {row['wall_s']:.0f} s "
                    f"({row['wall_over_budget']:.2f} x the budget)", flush=True)
    summary = {}
    for arm in ARMS:
        ok = [r for r in rows if r["arm"] == arm and "error" not in r]
        summary[arm] = {
            "runs": len(ok), "mean_trials": sig(statistics.fmean(r["trials"] for r in ok), 3)
            if ok else None,
            "mean_test_accuracy": sig(statistics.fmean(r["test_accuracy"] for r in ok))
            if ok else None,
            "max_wall_over_budget": max((r["wall_over_budget"] for r in rows
                                         if r["arm"] == arm), default=None)}
        print(f"{arm}: {summary[arm]}")
    with_plan, without = (summary[a]["mean_test_accuracy"] for a in ARMS)
    ratio = with_plan / without if with_plan and without else float("nan")
    Report("budget", ratio, "mean test accuracy with the budget's plan / without it",
           "> 1, >= 15 trials with the plan, wall <= 1.1 x the budget", rows, start, summary,
           {"dataset": args.dataset, "time_budget": args.time_budget, "seeds": args.seeds}
           ).write(Path(args.output))
    return 0
