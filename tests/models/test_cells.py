"""Cell spaces (NAS-Bench-201, DARTS), their genotype notations, and the tabular-benchmark mode
(a table this module builds itself by really training tiny cells on digits)."""

from __future__ import annotations

import random

import mlflow
import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from torch import nn

from raynas.config import Resources, SearchConfig
from raynas.data import load_dataset
from raynas.errors import ConfigError, SpaceError
from raynas.estimation import load_space
from raynas.estimation.tabular import load_table, table_key, tabulate
from raynas.experiment.driver import search
from raynas.experiment.resolve import resolve
from raynas.models import build_model, describe, from_genotype
from raynas.models.cell import (
    DARTS_OPS,
    NB201_EDGES,
    NB201_OPS,
    NB201Net,
    nb201_field,
    parse_genotype,
)

# A tiny NAS-Bench-201 space of 6 cells: 3 ops on one edge x 2 on another, the rest fixed.
TINY = {"name": "nb201_tiny", "model": "nb201", "space": {
    "channels": 4, "cells_per_stage": 1,
    "cell": {"edge_1_0": {"choice": ["nor_conv_3x3", "avg_pool_3x3", "none"]},
             "edge_2_0": "none", "edge_2_1": {"choice": ["nor_conv_3x3", "skip_connect"]},
             "edge_3_0": "none", "edge_3_1": "none", "edge_3_2": "nor_conv_1x1"},
    "train": {"lr": 0.01, "batch_size": 64, "optimizer": "adam"}}}
DARTS_V2 = (  # the cell DARTS found on CIFAR-10, as its genotypes.py prints it
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
    "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
    "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
    "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
    "reduce_concat=range(2, 6))")


def test_nb201_strings_round_trip_for_all_15625_cells():
    space = load_space("nb201_cell")
    archs = space.grid()
    strings = [describe(space, a) for a in archs]
    assert len(archs) == len(set(strings)) == 15_625
    assert all(from_genotype(space, s) == a for s, a in zip(strings, archs, strict=True))
    # the benchmark's own notation: the best CIFAR-10 cell of the NAS-Bench-201 paper
    best = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
            "nor_conv_3x3~2|")
    cell = from_genotype(space, best)["cell"]
    assert cell["edge_3_0"] == "skip_connect" and cell["edge_2_1"] == "nor_conv_3x3"
    for bad in ("|nor_conv_3x3~0|+|none~1|none~0|+|none~0|none~1|none~2|",
                "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "|none~0|"):
        with pytest.raises(SpaceError, match="NAS-Bench-201 string"):
            from_genotype(space, bad)


def test_darts_genotypes_round_trip():
    space = load_space("darts_cell")
    rng = random.Random(0)
    for _ in range(300):
        arch = space.sample(rng)
        assert from_genotype(space, describe(space, arch)) == arch
    arch = from_genotype(space, DARTS_V2)
    again, original = parse_genotype(describe(space, arch)), parse_genotype(DARTS_V2)
    assert again.normal_concat == original.reduce_concat == [2, 3, 4, 5]
    for kind in ("normal", "reduce"):  # the same edges; each node's pair in input order
        for k in range(4):
            assert sorted(getattr(again, kind)[2 * k:2 * k + 2], key=lambda e: e[1]) == sorted(
                getattr(original, kind)[2 * k:2 * k + 2], key=lambda e: e[1])
    assert arch["normal"]["node4"] == {"inputs": "0,1", "op_a": "skip_connect",
                                       "op_b": "sep_conv_3x3"}
    twice = DARTS_V2.replace("('skip_connect', 0), ('dil_conv_3x3', 2)",
                             "('dil_conv_3x3', 2), ('skip_connect', 2)")
    with pytest.raises(SpaceError, match="node 5 must read two distinct earlier states"):
        from_genotype(space, twice)
    with pytest.raises(SpaceError, match="not a DARTS genotype"):
        from_genotype(space, "Genotype(normal=__import__('os'))")


@pytest.fixture
def one_thread():
    """Tiny convolutions run fastest on one thread (as trials do; more threads only spin)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _trains(model: nn.Module, shape: tuple[int, ...], through_cells: bool = True) -> None:
    """Forward and backward; gradients reach the stem unless every edge is ``none``."""
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    stem = model.stem[0].weight.grad
    assert (stem is not None and stem.abs().sum() > 0) == through_cells


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28)])
def test_every_op_and_both_cell_types_build_and_train(shape, one_thread):
    nb201, darts = load_space("nb201_cell"), load_space("darts_cell")
    for op in NB201_OPS:
        arch = {**nb201.sample(random.Random(0)),
                "cell": {nb201_field(j, i): op for j, i in NB201_EDGES}}
        nb201.validate(arch)
        _trains(build_model(nb201, arch, shape, 10), shape, op != "none")
    for op in DARTS_OPS:
        cell = {f"node{n}": {"inputs": f"{n - 2},{n - 1}" if n > 2 else "0,1", "op_a": op,
                             "op_b": op} for n in range(2, 6)}
        arch = {**darts.sample(random.Random(0)), "channels": 4, "layers": 3,
                "normal": cell, "reduce": cell}
        model = build_model(darts, arch, shape, 10)  # layers 3: normal, reduce, reduce
        assert [c.preprocess0.__class__.__name__ for c in model.cells] == [
            "Sequential", "Sequential", "FactorizedReduce"]
        _trains(model, shape, op != "none")


def test_cells_take_any_module_per_edge(one_thread):
    """What one-shot supernets build on: every edge from a factory (here, the sum of all
    ops, a mixed op with equal weights)."""

    class Sum(nn.Module):
        def __init__(self, c: int, stride: int) -> None:
            super().__init__()
            self.ops = nn.ModuleList(f(c, c, stride) for f in NB201_OPS.values())

        def forward(self, x):
            return sum(op(x) for op in self.ops)

    edges = []

    def edge(node: int, source: int, c: int, stride: int) -> nn.Module:
        edges.append((node, source))
        return Sum(c, stride)

    _trains(NB201Net(edge, (1, 8, 8), 10, channels=4, cells_per_stage=1), (1, 8, 8))
    assert edges == list(NB201_EDGES) * 3  # one cell per stage


@pytest.mark.parametrize("model, edit, message", [
    ("nb201_cell", lambda s: s["cell"].update(edge_1_0={"choice": ["none", "conv_3x3"]}),
     "space.cell.edge_1_0: unknown op 'conv_3x3'"),
    ("nb201_cell", lambda s: s["cell"].pop("edge_3_2"), "space.cell.edge_3_2: missing"),
    ("nb201_cell", lambda s: s.update(channels={"float": [1.0, 2.0]}),
     "space.channels: must be a constant or a choice"),
    ("darts_cell", lambda s: s["normal"]["node3"].update(inputs={"choice": ["0,1", "2,2"]}),
     "space.normal.node3.inputs: '2,2' is not a pair"),
    ("darts_cell", lambda s: s.update(layer=3), "space.layer: unknown field"),
])
def test_cell_spaces_are_checked_at_load(model, edit, message):
    path = load_space(model).document
    doc = yaml.safe_load(yaml.safe_dump(path))  # a deep copy without YAML aliases
    edit(doc["space"])
    with pytest.raises(SpaceError, match=message) as error:
        load_space(doc)
    assert "\n" not in str(error.value)


# --- tabular-benchmark mode --------------------------------------------------------------------
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
    result = search(SearchConfig(space=str(tmp_path / "tiny.yaml"),
                                 dataset=f"tabular:{partial}", strategy="grid",
                                 scheduler="asha", max_epochs=EPOCHS,
                                 resources=Resources(concurrency=1)))
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


@pytest.mark.parametrize("edit, flags, message", [
    (lambda text: text.replace("val_accuracy", "val_acc"), {},
     "missing column 'val_accuracy'"),
    (lambda text: text.replace(",2,", ",3,"), {}, "epochs must be 1, 2, ... without gaps"),
    (lambda text: "\n".join(text.splitlines()[:1] + [
        ",".join("93.5" if i == 3 else v for i, v in enumerate(r.split(",")))
        for r in text.splitlines()[1:]]), {}, "accuracies must be fractions in"),
    (lambda text: text, {"max_epochs": EPOCHS + 1}, "--max-epochs 3: the table's runs have 2"),
    (lambda text: text, {"space": "darts_cell"}, "none of the 6 architectures"),
    (lambda text: text, {"fidelity": "data"}, "--fidelity data: a table holds"),
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
    from raynas.bench.tabular import full_time, incumbent, search_points

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
