"""Architecture diagrams, per-trial structure tags, the search report and `raynas compare`, on a
real search (the session's `tiny_search`) and real MLflow stores."""

from __future__ import annotations

import io
import random
from pathlib import Path

from mlflow.tracking import MlflowClient
from PIL import Image

from raynas.cli import main
from raynas.estimation import load_space
from raynas.models import BUILDERS
from raynas.report import diagram, search
from raynas.report.graph import facts, graph_of, macro_graph, nb201_graph
from raynas.space import builtin_spaces

PARETO_SIZE = (660, 495)  # raynas.strategies.pareto.pareto_plot: 6 x 4.5 inches at 110 dpi


def png_size(content: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(content))
    assert image.format == "PNG"
    return image.size


def layer(op: str, channels: int, stride: int, connection: str) -> dict:
    return {"op": op, "channels": channels, "stride": stride, "connection": connection}


def test_every_builder_draws_fixed_size_diagrams_of_its_spaces():
    assert all(b.graph for b in BUILDERS.values())  # a new builder needs its graph function
    drawn = set()
    for path in builtin_spaces().values():
        space = load_space(path)
        panels = graph_of(space.model)(space.sample(random.Random(0)))
        assert png_size(diagram.draw(panels, space.name)) == diagram.SIZE
        drawn.add(space.model)
    assert drawn == set(BUILDERS)


def test_structural_facts_of_known_architectures():
    macro = {"space": "t", "stem_channels": 16, "layers": [
        layer("conv_3x3", 16, 1, "series"), layer("identity", 32, 2, "skip"),
        layer("conv_3x3", 32, 1, "parallel"), layer("max_pool_3x3", 32, 1, "dense"),
        layer("zero", 32, 1, "series")]}
    # parallel counts its two branches; the zero layer carries nothing, so the longest chain
    # of ops is conv, identity, conv, max_pool
    assert facts(macro_graph(macro)) == {
        "depth": 4, "ops": "conv_3x3:3,identity:1,max_pool_3x3:1,zero:1"}
    dense = macro_graph(macro)[0]
    assert sorted(e.src for e in dense.edges if e.dst == "cat4") == ["x0", "x1", "x2", "x3"]

    none = dict.fromkeys(("edge_1_0", "edge_2_0", "edge_2_1", "edge_3_0", "edge_3_1",
                          "edge_3_2"), "none")
    chain = {**none, "edge_1_0": "nor_conv_3x3", "edge_2_1": "skip_connect",
             "edge_3_2": "avg_pool_3x3"}
    nb201 = {"channels": 8, "cells_per_stage": 1}
    assert facts(nb201_graph({**nb201, "cell": chain})) == {
        "depth": 3, "ops": "none:3,avg_pool_3x3:1,nor_conv_3x3:1,skip_connect:1"}
    assert facts(nb201_graph({**nb201, "cell": {**none, "edge_3_0": "nor_conv_1x1"}}))[
        "depth"] == 1


def test_every_trial_run_has_its_diagram_and_structure_tags(tiny_search):
    client = MlflowClient(tiny_search.tracking_uri)
    trials = search.collect(client, tiny_search.parent_run_id).trials
    assert len(trials) == 4
    for trial in trials:
        run = trial.run
        tags, metrics = run.data.tags, run.data.metrics
        arch = search.architecture(client, run.info.run_id)
        expected = facts(graph_of("macro")(arch))
        assert tags["raynas.depth"] == str(expected["depth"]) == str(len(arch["layers"]))
        assert tags["raynas.ops"] == expected["ops"]
        assert tags["raynas.params"] == str(int(metrics["params"]))
        assert tags["raynas.flops"] == str(int(metrics["flops"]))
        png = Path(client.download_artifacts(run.info.run_id, "architecture.png",
                                             str(Path(tiny_search.folder) / "check")))
        assert png_size(png.read_bytes()) == diagram.SIZE


def test_the_search_report_is_logged_and_rebuilt_by_raynas_report(tiny_search, capsys):
    client = MlflowClient(tiny_search.tracking_uri)
    run_id = tiny_search.parent_run_id
    folder = Path(client.get_run(run_id).info.artifact_uri)
    sizes = {"anytime.png": search.ANYTIME_SIZE, "best_architecture.png": diagram.SIZE,
             "accuracy_vs_params.png": PARETO_SIZE, "accuracy_vs_flops.png": PARETO_SIZE}
    for name, size in sizes.items():
        assert png_size((folder / name).read_bytes()) == size, name
    found = search.collect(client, run_id)
    parent_metrics = client.get_run(run_id).data.metrics
    # the last point of the anytime curve is the search's best
    assert max(t.val_accuracy for t in found.trials) == parent_metrics["best_val_accuracy"]
    assert found.best.trial_id == tiny_search.best["trial_id"]
    report = (folder / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 4 + len(found.top)  # self-contained
    assert f"trial {tiny_search.best['trial_id']}" in report
    comparison = (folder / "comparison.html").read_text()
    assert [t.trial_id for t in found.top] == sorted(
        (t.trial_id for t in found.trials), key=lambda i: comparison.index(f"<td>{i}</td>"))

    for name in (*sizes, "report.html", "comparison.html"):
        (folder / name).unlink()
    assert main(["report", run_id, "--tracking-uri", tiny_search.tracking_uri]) == 0
    assert "report.html" in capsys.readouterr().out
    for name, size in sizes.items():
        assert png_size((folder / name).read_bytes()) == size, name
    assert (folder / "report.html").read_text().count("data:image/png;base64,") == 4 + len(
        found.top)

    trial_id = found.trials[0].run.info.run_id
    assert main(["report", trial_id, "--tracking-uri", tiny_search.tracking_uri]) == 2
    assert "is not the parent run of a search" in capsys.readouterr().err


def test_compare_prints_the_structural_diff_of_two_runs(tracking, capsys):
    client = MlflowClient(tracking)
    experiment = client.create_experiment("compare")
    first = [layer("conv_3x3", 16, 1, "series"), layer("max_pool_3x3", 32, 2, "skip"),
             layer("conv_5x5", 32, 1, "series")]
    second = [layer("conv_5x5", 64, 2, "skip"), first[2], layer("identity", 64, 1, "dense")]
    runs = []
    for name, layers, params, flops in (("a", first, 1000, 50_000), ("b", second, 1500, 40_000)):
        run = client.create_run(experiment, run_name=name)
        arch = {"space": "t", "stem_channels": 16, "layers": layers,
                "train": {"lr": 0.01 if name == "a" else 0.003, "optimizer": "adam"}}
        client.log_dict(run.info.run_id, arch, "architecture.json")
        client.log_metric(run.info.run_id, "params", params)
        client.log_metric(run.info.run_id, "flops", flops)
        runs.append(run.info.run_id)
    assert main(["compare", *runs]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"A: run {runs[0]} (a, arch -)")
    assert lines[2:] == [
        "- layers.0: op=conv_3x3, channels=16, stride=1, connection=series",
        "~ layers.1 (B: layers.0): op max_pool_3x3 -> conv_5x5, channels 32 -> 64",
        "+ layers.2: op=identity, channels=64, stride=1, connection=dense",
        "~ train: lr 0.01 -> 0.003",
        "params: 1,000 -> 1,500 (+500, +50.0%)",
        "flops: 50,000 -> 40,000 (-10,000, -20.0%)",
    ]
    assert main(["compare", runs[0], runs[0]]) == 0
    assert "the architectures are the same" in capsys.readouterr().out
    for command in (["compare", runs[0], "nosuchrun"], ["report", "nosuchrun"]):
        assert main(command) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"raynas: error: RUN_ID: no run 'nosuchrun' in {tracking}")

