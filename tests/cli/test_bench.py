"""``raynas bench overhead|throughput|asha|scaling --quick`` through the CLI, for real: each
prints its ratio line last and writes JSON + CSV whose numbers are sane (no tight timings: the
CI machine is shared)."""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from pathlib import Path

import pytest

from raynas.cli import main


def ratio_from_rows(report: dict) -> float:
    """The report's ratio computed again from the measurements in its rows: the median over
    repeats (seeds) of raynas's value over the baseline's; 2 Ray nodes over 1 for scaling."""
    rows = report["rows"]

    def by(key: str, side: str, value: str) -> list[float]:  # None: never (asha's target)
        return [math.inf if r[value] is None else r[value]
                for r in sorted(rows, key=lambda r: r.get("repeat", r.get("seed", 0)))
                if r[key] == side]

    if report["benchmark"] == "scaling":
        rate = {r["nodes"]: r["trials_per_min"] for r in rows if r["kind"] == "cpu"}
        return rate[2] / rate[1]
    key, value, side, baseline = {"overhead": ("system", "trial_s", "raynas", "tune"),
                                  "throughput": ("loop", "samples_per_s", "raynas",
                                                 "handwritten"),
                                  "asha": ("scheduler", "time_to_target_s", "fifo", "asha"),
                                  }[report["benchmark"]]
    top, bottom = by(key, side, value), by(key, baseline, value)
    assert len(top) == len(bottom) > 0
    return statistics.median(t / b for t, b in zip(top, bottom, strict=True))


def bench(name: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> dict:
    output = tmp_path / f"{name}.json"
    assert main(["bench", name, "--quick", "--output", str(output)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    match = re.fullmatch(r"ratio: (\d+\.\d\d)", lines[-1])
    assert match, lines[-5:]
    report = json.loads(output.read_text())
    assert report["benchmark"] == name
    assert float(match.group(1)) == pytest.approx(report["ratio"], abs=0.006)
    assert math.isfinite(report["ratio"])
    assert report["ratio"] == pytest.approx(ratio_from_rows(report), rel=0.02, abs=0.01)
    with open(output.with_suffix(".csv")) as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(report["rows"]) > 0
    for line, row in zip(table, report["rows"], strict=True):
        assert {k: line[k] for k in row} == {k: "" if v is None else str(v)
                                             for k, v in row.items()}
    assert report["machine"]["cores"] >= 1
    return report


def test_overhead_compares_raynas_search_with_plain_tune(ray_local, tmp_path, capsys):
    report = bench("overhead", tmp_path, capsys)
    trials = report["settings"]["trials"]
    assert {r["system"] for r in report["rows"]} == {"raynas", "tune", "tune+mlflow"}
    for row in report["rows"]:
        assert row["trials"] == trials and row["trial_s"] > 0
        assert row["trials_per_s"] == pytest.approx(trials / row["trial_s"], rel=0.01)
        # the trial phase is inside the whole fit (which also starts the trial actors)
        assert row["trial_s"] < row["fit_s"]
    summary = report["summary"]
    # Every side ran whole trials: well under 100 trials/s, and more than one per minute.
    for side in ("raynas", "tune", "tune+mlflow"):
        assert 1 / 60 < summary[f"{side}_trials_per_s"] < 100
    # the median of the paired ratios, between their smallest and largest (4 digits each)
    assert summary["ratio_min"] * 0.999 <= report["ratio"] <= summary["ratio_max"] * 1.001
    # raynas's search also retrained, logged and registered a model: a real fixed cost.
    assert summary["raynas_fixed_s_per_search"] > 0
    assert 0.2 < report["ratio"] < 20


def test_throughput_of_our_training_loop_is_near_a_handwritten_one(tmp_path, capsys):
    report = bench("throughput", tmp_path, capsys)
    loops = {r["loop"] for r in report["rows"]}
    assert loops == {"raynas", "handwritten"}
    assert all(r["samples_per_s"] > 0 and r["samples"] == 1257 for r in report["rows"])
    assert 0.3 < report["ratio"] < 3  # same model, data and threads: the same order


def test_asha_and_fifo_search_the_same_budget(ray_local, tmp_path, capsys):
    report = bench("asha", tmp_path, capsys)
    settings = report["settings"]
    rows = {r["scheduler"]: r for r in report["rows"]}
    # FIFO trains every trial to the end; ASHA never more, and both learn digits.
    assert rows["fifo"]["results"] == settings["trials"] * settings["max_epochs"]
    assert rows["asha"]["results"] <= rows["fifo"]["results"]
    assert min(r["best_val_accuracy"] for r in rows.values()) > 0.5
    target = max(r["best_val_accuracy"] for r in rows.values()) - settings["tolerance"]
    assert rows["fifo"]["target"] == pytest.approx(target, abs=1e-4)
    assert 0 < rows["fifo"]["time_to_target_s"] <= rows["fifo"]["wall_s"]


@pytest.mark.e2e  # starts a two-node Ray cluster of its own
def test_scaling_runs_trials_on_a_second_ray_node(tmp_path, capsys):
    report = bench("scaling", tmp_path, capsys)
    rows = [r for r in report["rows"] if r["kind"] == "cpu"]
    assert [r["nodes"] for r in rows] == [1, 2]
    trials = report["settings"]["trials"]
    for row in rows:
        assert sum(row["trials_per_node"]) == trials
        assert row["trials_per_min"] == pytest.approx(60 * trials / row["seconds"], rel=0.02)
    assert len(rows[0]["trials_per_node"]) == 1  # one node: every trial on it
    assert report["summary"]["cpu_speedup"] == pytest.approx(report["ratio"], abs=0.001)
