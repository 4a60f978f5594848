"""Tabular benchmarks made here and searched (``raynas tabulate``, ``--dataset tabular:PATH``,
``raynas bench tabular``), on a table this module builds itself by really training tiny
NAS-Bench-201 cells on digits."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from raynas.cli import main
from raynas.config import Resources, SearchConfig
from raynas.data import load_dataset
from raynas.errors import ConfigError
from raynas.estimation import load_space
from raynas.experiment.driver import search
from raynas.experiment.resolve import resolve
from raynas.models import describe, from_genotype
from raynas.tabular.bench import full_time, incumbent, search_points
from raynas.tabular.table import load_table, table_key
from raynas.tabular.tabulate import tabulate

# A tiny NAS-Bench-201 space of 6 cells: 3 ops on one edge x 2 on another, the rest fixed.
TINY = {"name": "nb201_tiny", "model": "nb201", "space": {
    "channels": 4, "cells_per_stage": 1,
    "cell": {"edge_1_0": {"choice": ["nor_conv_3x3", "avg_pool_3x3", "none"]},
             "edge_2_0": "none", "edge_2_1": {"choice": ["nor_conv_3x3", "skip_connect"]},
             "edge_3_0": "none", "edge_3_1": "none", "edge_3_2": "nor_conv_1x1"},
    "train": {"lr": 0.01, "batch_size": 64, "optimizer": "adam"}}}
EPOCHS = 2


@pytest.fixture(scope="module")
def table_csv(ray_local, tmp_path_factory):
    """The whole tiny space (6 cells), really trained for 2 epochs on digits."""
    path = tmp_path_factory.mktemp("table") / "tiny.csv"
    count, seconds = tabulate(load_space(TINY), load_dataset("digits"), 10, EPOCHS, 1, path)
    assert count == 6 and seconds > 0
    return path


def test_tabulate_writes_a_table_of_the_whole_small_space(table_csv):
    table, space = load_table(table_csv), load_space(TINY)
    assert set(table.runs) == {describe(space, a) for a in space.grid()}
    assert table.epochs == EPOCHS and table.metrics >= {"val_accuracy", "params", "flops"}
    final = {k: r[0].values["val_accuracy"][-1] for k, r in table.runs.items()}
    assert max(final.values()) > 0.5  # it really trained: chance is 0.1
    assert min(final.values()) < max(final.values())


def test_tabular_search_looks_up_stops_early_and_skips_unknown_architectures(
        ray_local, tracking, table_csv, tmp_path):
    space, full = load_space(TINY), load_table(table_csv)
    rows = table_csv.read_text().splitlines()
    missing = describe(space, space.grid()[-1])
    partial = tmp_path / "partial.csv"  # the table without one architecture
    partial.write_text("\n".join(r for r in rows if not r.startswith(missing)) + "\n")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    lines: list[str] = []
    result = search(SearchConfig(space=str(tmp_path / "tiny.yaml"),
                                 dataset=f"tabular:{partial}", strategy="grid",
                                 scheduler="asha", max_epochs=EPOCHS,
                                 resources=Resources(concurrency=1)),
                    progress=lines.append)
    assert result.num_trials == 6 and result.num_failed == 1
    assert result.model_uri == "none (tabular search)"
    client = MlflowClient(tracking)
    runs = client.search_runs(
        [client.get_experiment_by_name(result.experiment).experiment_id],
        f"tags.mlflow.parentRunId = '{result.parent_run_id}' and tags.`raynas.role` = 'trial'")
    statuses, last, total = {}, {}, 0.0
    for run in runs:  # every trial's run is tagged with its NAS-Bench-201 string
        key = run.data.tags["raynas.genotype"]
        arch = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/architecture.json")
        assert key == describe(space, arch) and from_genotype(space, key) == arch
        statuses[key] = run.info.status
        if key == missing:
            assert run.info.status == "FAILED"
            assert "is not in the table" in run.data.tags["raynas.error"]
            continue
        curve = full.runs[key][0].values
        val = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id,
                                                                    "val_accuracy")]
        sim = [m.value for m in client.get_metric_history(run.info.run_id, "sim_time_s")]
        steps = len(val)
        assert val == [(e + 1, pytest.approx(curve["val_accuracy"][e])) for e in range(steps)]
        assert sim == pytest.approx(np.cumsum(curve["train_time_s"])[:steps].tolist())
        assert run.info.status == ("FINISHED" if steps == EPOCHS else "KILLED")
        total += sim[-1]
        last[key] = val[-1][1]
    assert "KILLED" in statuses.values()  # ASHA stopped trials on the table's numbers
    parent = client.get_run(result.parent_run_id)
    assert parent.data.metrics["sim_time_s"] == pytest.approx(total)
    assert result.best["sim_time_s"] == pytest.approx(total)
    best = table_key(space, result.best["arch"])
    assert result.best["test_accuracy"] == pytest.approx(
        full.runs[best][0].values["test_accuracy"][-1])
    assert result.best["val_accuracy"] == max(last.values()) == last[best]
    # The progress line says what was looked up instead of retrained (total: seconds, < 1000).
    assert f"best: trial {result.best['trial_id']} val_accuracy={last[best]:.4f} (5 finished, " \
           f"1 failed); not retrained, looked up: test_accuracy=" \
           f"{result.best['test_accuracy']:.4g}, sim_time_s={total:.4g}" in lines


@pytest.mark.parametrize("edit, flags, message", [
    (lambda text: text.replace("val_accuracy", "val_acc"), {},
     "missing column 'val_accuracy'"),
    (lambda text: text.replace(",2,", ",3,"), {}, "epochs must be 1, 2, ... without gaps"),
    (lambda text: "\n".join(text.splitlines()[:1] + [
        ",".join("93.5" if i == 3 else v for i, v in enumerate(r.split(",")))
        for r in text.splitlines()[1:]]), {}, "accuracies must be fractions in"),
    (lambda text: text, {"max_epochs": EPOCHS + 1}, "--max-epochs 3: the table's runs have 2"),
    (lambda text: text, {"space": "darts_cell"}, "none of the 6 architectures"),
    (lambda text: text, {"fidelity": "data"},
     "--fidelity/--proxy-task data: not for a tabular search.*use --fidelity epochs"),
    (lambda text: "arch,epoch\n[", {}, "missing column"),
])
def test_a_bad_table_or_search_is_one_line_at_validation(table_csv, tmp_path, edit, flags,
                                                         message):
    bad = tmp_path / "bad.csv"
    bad.write_text(edit(table_csv.read_text()))
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    settings = {"space": str(tmp_path / "tiny.yaml"), "max_epochs": EPOCHS, **flags}
    with pytest.raises(ConfigError, match=message) as error:
        resolve(SearchConfig(dataset=f"tabular:{bad}", **settings))
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="no such file"):
        resolve(SearchConfig(dataset=f"tabular:{tmp_path / 'nope.csv'}", **settings))


def test_bench_compares_strategies_at_simulated_time(ray_local, table_csv):
    space, table = load_space(TINY), load_table(table_csv)
    points, spent = search_points("random", 0, space, table, 2, EPOCHS, 1)
    final = {k: r[0].values["val_accuracy"][-1] for k, r in table.runs.items()}
    assert points and all(p.val_accuracy in final.values() for p in points)
    times = [p.sim_time_s for p in points]
    assert times == sorted(times) and spent >= times[-1] > 0
    # every architecture once (the search ran out of new ones): the clock is the whole table
    assert spent == pytest.approx(len(table.runs) * full_time(table, EPOCHS))
    assert incumbent(points, spent).val_accuracy == max(final.values())
    assert incumbent(points, times[0] / 2) is None


def test_bench_tabular_compares_from_the_command_line(ray_local, table_csv, tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    output = tmp_path / "bench.txt"
    assert main(["bench", "tabular", "--table", str(table_csv), "--space",
                 str(tmp_path / "tiny.yaml"), "--strategies", "evolution", "--seeds", "1",
                 "--trials", "1", "--concurrency", "1", "--output", str(output)]) == 0
    report = json.loads(output.with_suffix(".txt.json").read_text())
    assert list(report["strategies"]) == ["random", "evolution"]  # random: the baseline
    assert report["epochs"] == EPOCHS  # the table's, by default
    assert report["budget_s"] == pytest.approx(full_time(load_table(table_csv), EPOCHS))
    assert output.read_text().startswith(f"tabular benchmark {table_csv} (6 architectures)")


def test_tabulate_refuses_an_unknown_format_before_it_trains(capsys):
    assert main(["tabulate", "--output", "table.txt"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "raynas: error: --output: unknown table format '.txt'; give a .csv, .json, .jsonl, "
        ".parquet, .pq file"]
