"""Cheap performance estimation: zero-cost proxies, the zero_cost strategy, learning-curve
stopping, proxy tasks and ``raynas bench estimators`` - with real models, real Ray and MLflow."""

from __future__ import annotations

import csv
import json
import math
import re

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from scipy.stats import spearmanr
from searches import child_runs

from raynas.cli import main
from raynas.config import SearchConfig
from raynas.data import load_dataset
from raynas.errors import ConfigError
from raynas.estimation import load_space
from raynas.estimation.fidelity import ProxyTask, parse_fidelity, parse_proxy_task
from raynas.estimation.proxies import PROXIES, minibatch, score
from raynas.estimation.train import Run
from raynas.experiment.driver import search
from raynas.models import build_model
from raynas.models.macro import CONNECTIONS
from raynas.objectives.measure import count_params
from raynas.schedulers.curve import LearningCurveStopping
from raynas.strategies.zero_cost import SCORES_FILE

MACRO = load_space("macro_cnn")


def two_layers(op: str, connection: str) -> dict:
    return MACRO.validate({
        "space": "macro_cnn", "stem_channels": 16,
        "layers": [{"op": op, "channels": 16, "stride": s, "connection": connection}
                   for s in (1, 2)],
        "train": {"lr": 0.01, "weight_decay": 1e-4, "batch_size": 64, "optimizer": "adam"}})


@pytest.fixture(scope="module")
def batch():
    data = load_dataset("digits")
    return tuple(torch.as_tensor(a) for a in minibatch(data.x_train, data.y_train, seed=0))


@pytest.mark.parametrize("proxy", list(PROXIES))
def test_each_proxy_is_finite_for_every_op_and_connection_and_ranks_a_dead_network_last(
        proxy, batch):
    x, y = batch
    cases = {(op, "series"): two_layers(op, "series") for op in MACRO.values("layers.op")}
    cases |= {("conv_3x3", c): two_layers("conv_3x3", c) for c in CONNECTIONS}
    values = {key: score(MACRO, arch, proxy, x, y, num_classes=10) for key, arch in cases.items()}
    assert all(math.isfinite(v) for v in values.values()), values
    # all-zero ops: nothing flows from the input to the classifier
    assert values["conv_3x3", "skip"] > values["zero", "series"]
    # scored at the architecture's seeded initialisation: the same every time
    assert score(MACRO, cases["conv_3x3", "dense"], proxy, x, y, 10) == values["conv_3x3", "dense"]


def test_zero_cost_strategy_scores_candidates_in_ray_tasks_and_trains_the_top_k_on_proxy_rungs(
        ray_local, tracking):
    """One search for both (each search costs seconds of Tune, MLflow and a final model): the
    zero_cost strategy, trials on width rungs of a low-resolution proxy task, the learning-curve
    scheduler driven by Tune."""
    result = search(SearchConfig(space="small_cnn", strategy="zero_cost",
                                 strategy_options={"proxy": "snip", "candidates": "24",
                                                   "top_k": "2"},
                                 scheduler="curve", max_epochs=1,
                                 fidelity="width:0.3", proxy_task="resolution=0.5",
                                 retrain_epochs=1))
    client = MlflowClient(tracking)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["raynas.zc_proxy"] == "snip"
    report = json.loads(mlflow.artifacts.load_text(f"runs:/{result.parent_run_id}/"
                                                   f"{SCORES_FILE}"))
    scores = report["scores"]
    assert report["candidates"] == len(scores) == 24
    assert len({s["arch_hash"] for s in scores}) == 24
    assert all(math.isfinite(s["score"]) for s in scores)
    # scored by Ray tasks, several candidates per task
    assert 1 < report["tasks"] < 24 and all(s["task_id"] for s in scores)
    top = sorted(scores, key=lambda s: -s["score"])[:2]
    assert {s["arch_hash"] for s in scores if s["selected"]} == {s["arch_hash"] for s in top}

    trials = child_runs(client, result)
    assert result.num_trials == len(trials) == 2 and result.best["test_accuracy"] > 0.5
    trained = {run.data.tags["raynas.arch_hash"]: run.data.metrics["zc_snip"] for run in trials}
    assert trained == {s["arch_hash"]: pytest.approx(s["score"]) for s in top}

    space = load_space("small_cnn")
    for run in trials:
        widths = {m.step: m.value for m in client.get_metric_history(run.info.run_id,
                                                                     "width_multiplier")}
        assert widths == {1: pytest.approx(1 / 3), 3: 1.0}  # the rungs: 1/3 of the channels, all
        resolutions = client.get_metric_history(run.info.run_id, "resolution_scale")
        assert [m.value for m in resolutions] == [0.5, 0.5]
        # params are the architecture's own, not its narrow proxy model's
        arch = json.loads(mlflow.artifacts.load_text(
            f"runs:/{run.info.run_id}/architecture.json"))
        assert run.data.metrics["params"] == count_params(build_model(space, arch, (1, 8, 8), 10))


def test_a_proxy_task_run_is_narrower_and_sees_downsampled_inputs():
    arch = two_layers("conv_3x3", "skip")
    full = Run(MACRO, arch, (1, 8, 8), 10, 1, torch.device("cpu"), 0)
    cheap = Run(MACRO, arch, (1, 8, 8), 10, 1, torch.device("cpu"), 0,
                ProxyTask(width=0.5, resolution=0.5))
    x = torch.randn(5, 1, 8, 8)
    assert cheap.inputs(x).shape == (5, 1, 4, 4) and full.inputs(x) is x
    assert cheap.inputs(x)[0, 0, 0, 0] == pytest.approx(x[0, 0, :2, :2].mean())
    assert count_params(cheap.model) < count_params(full.model) / 3
    # evaluated with the narrow model on the downsampled inputs
    y = torch.tensor([0, 1, 2, 3, 4])
    loss, accuracy = cheap.evaluate(x, y)
    with torch.no_grad():
        out = cheap.model.eval()(cheap.inputs(x))
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(out, y).item(), rel=1e-5)
    assert accuracy == (out.argmax(1) == y).sum().item() / 5


def test_proxy_task_and_fidelity_parsing():
    fidelity = parse_fidelity("resolution:0.3", 2, "width=0.5,data=0.5")
    assert fidelity.rungs == 2 and fidelity.max_budget == 3
    assert fidelity.task_at(0) == ProxyTask(data=0.5, width=0.5, resolution=1 / 3)
    assert fidelity.task_at(1) == ProxyTask(data=0.5, width=0.5, resolution=1.0)
    assert fidelity.describe() == ("2 epochs on resolution scales 1/3, 1, proxy task data 0.5, "
                                   "width 0.5")
    assert parse_fidelity("epochs", 4, "width=0.25").task_at(0) == ProxyTask(width=0.25)
    for bad in ("width=0", "width=1.5", "depth=0.5", "width"):
        with pytest.raises(ConfigError, match="^--proxy-task: expected KNOB=FRACTION"):
            parse_proxy_task(bad)


def feed(scheduler, trial, curve, start=1):
    return [scheduler.on_trial_result(None, trial, {"budget": t, "val_accuracy": v,
                                                    "val_loss": 1 - v})
            for t, v in enumerate(curve, start=start)]


@pytest.mark.parametrize(("metric", "mode"), [("val_accuracy", "max"), ("val_loss", "min")])
def test_learning_curve_stopping_stops_a_clearly_worse_curve_and_keeps_a_promising_one(
        metric, mode):
    scheduler = LearningCurveStopping(max_t=9, grace_period=3, confidence=0.95)
    assert scheduler.set_search_properties(metric, mode)
    best, worse, promising = (Trial("curve", config={}, trial_id=t, stub=True)
                              for t in ("best", "worse", "promising"))
    budgets = np.arange(1, 10)
    for trial in (best, worse, promising):
        scheduler.on_trial_add(None, trial)
    # the first trial has nothing to lose against: it runs to the end
    assert set(feed(scheduler, best, 0.90 - 0.4 / budgets)) == {TrialScheduler.CONTINUE}
    scheduler.on_trial_complete(None, best, {"budget": 9, metric: 0.90 - 0.4 / 9})
    # a curve flattening out near 0.5 is stopped as soon as it is judged (the grace period)
    actions = feed(scheduler, worse, 0.5 - 0.3 * np.exp(-budgets[:5]))
    assert actions == [TrialScheduler.CONTINUE] * 2 + [TrialScheduler.STOP] * 3
    assert scheduler.stopped["worse"].mean < 0.6 if mode == "max" else (
        scheduler.stopped["worse"].mean > -0.6)
    # one that is still behind but rising steeply towards a better end is kept
    assert set(feed(scheduler, promising, 0.99 - 0.5 / budgets[:8])) == {
        TrialScheduler.CONTINUE}
    assert "promising" not in scheduler.stopped


def test_bench_estimators_quick_prints_its_ratio_line(tmp_path, capsys):
    output = tmp_path / "estimators.json"
    assert main(["bench", "estimators", "--quick", "--output", str(output)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"ratio: \d+\.\d\d", lines[-1])
    report = json.loads(output.read_text())
    assert float(lines[-1].split()[1]) == pytest.approx(report["prefilter"]["ratio"], abs=0.006)
    names = [r["estimator"] for r in report["estimators"]]
    assert names[: len(PROXIES)] == list(PROXIES)
    assert {"train_1_epoch", "proxy_task(width 0.5, resolution 0.5)",
            "curve_extrapolation(3_epochs)"} <= set(names)
    # each correlation is the one of the per-architecture numbers the report lists
    archs = report["architectures"]
    finals = [a["final"] for a in archs]
    assert len(archs) == 6 and finals == [a["curve"][-1] for a in archs]
    for row in report["estimators"]:
        values = [a[row["estimator"]] for a in archs]
        rho = spearmanr(values, finals).statistic if len(set(values)) > 1 else math.nan
        assert row["spearman"] == pytest.approx(rho, nan_ok=True), row
        assert row["seconds_per_arch"] > 0
    prefilter = report["prefilter"]
    assert prefilter["train_all_seconds"] == pytest.approx(sum(a["train_seconds"] for a in archs))
    assert prefilter["ratio"] == pytest.approx(prefilter["prefilter_seconds"]
                                               / prefilter["train_all_seconds"])
    assert 1 <= prefilter["k"] <= prefilter["of"] == 6
    assert prefilter["best_top_k"] >= prefilter["best_all"] - prefilter["tolerance"]
    with output.with_suffix(".csv").open() as file:
        assert len(list(csv.reader(file))) == 1 + 6
