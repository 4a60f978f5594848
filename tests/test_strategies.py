"""Every strategy and scheduler runs a tiny real search end to end: a real local Ray, real
trainings on digits, a real MLflow SQLite store in tmp_path."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from raynas import SearchConfig, search
from raynas.strategies.pareto import dominates

pytestmark = pytest.mark.usefixtures("ray_local")


def tiny(tracking: str, **overrides) -> SearchConfig:
    settings = {"space": "small_cnn", "strategy": "random", "scheduler": "fifo",
                "num_trials": 4, "max_epochs": 1, "concurrency": 2, "retrain_epochs": 1,
                "tracking_uri": tracking, "experiment": "t", **overrides}
    return SearchConfig(**settings)


def trial_runs(tracking: str, parent_run_id: str):
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("t")
    runs = client.search_runs([experiment.experiment_id],
                              f"tags.mlflow.parentRunId = '{parent_run_id}'")
    return client, [r for r in runs if r.data.tags.get("raynas.role") == "trial"]


@pytest.mark.parametrize("strategy", ["random", "grid", "tpe", "gp", "evolution", "rl", "bohb"])
def test_strategy_runs_a_search_that_lands_in_mlflow(strategy, tracking):
    result = search(tiny(tracking, strategy=strategy))
    client, trials = trial_runs(tracking, result.parent_run_id)
    assert result.num_trials == 4 and result.num_failed == 0
    assert len(trials) == 4
    assert all(r.info.status == "FINISHED" and "val_accuracy" in r.data.metrics for r in trials)
    assert len({r.data.tags["raynas.arch_hash"] for r in trials}) == 4  # no duplicates trained
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["raynas.strategy"] == strategy
    assert parent.data.metrics["num_duplicates"] >= 0 or strategy == "grid"
    assert 0 <= result.best["test_accuracy"] <= 1


def test_nsga2_logs_a_non_dominated_pareto_front(tracking):
    result = search(tiny(tracking, strategy="nsga2", num_trials=6,
                         objective=["val_accuracy:max", "params:min"]))
    client, trials = trial_runs(tracking, result.parent_run_id)
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"pareto.json", "pareto.png"} <= artifacts
    path = client.download_artifacts(result.parent_run_id, "pareto.json")
    with open(path) as f:
        pareto = json.load(f)
    front = [(p["val_accuracy"], p["params"]) for p in pareto["front"]]
    points = [(r.data.metrics["val_accuracy"], r.data.metrics["params"]) for r in trials]
    modes = ["max", "min"]
    assert front and set(front) <= set(points)
    assert not any(dominates(p, f, modes) for p in points for f in front)
    assert all(any(dominates(f, p, modes) or f == p for f in front) for p in points)


def test_asha_stops_weak_trials_early_and_mlflow_says_killed(tracking):
    result = search(tiny(tracking, scheduler="asha", num_trials=6, max_epochs=3))
    _, trials = trial_runs(tracking, result.parent_run_id)
    statuses = [r.info.status for r in trials]
    assert len(trials) == 6 and "KILLED" in statuses and "FINISHED" in statuses
    killed = [r for r in trials if r.info.status == "KILLED"]
    assert all(r.data.tags.get("raynas.stopped_early") == "true" for r in killed)


def test_hyperband_halves_a_full_bracket_and_mlflow_says_killed(tracking):
    # max_epochs 3: brackets of 2 trials x 3 epochs and 3 trials x 1 epoch; the second keeps 1
    # of 3 after one epoch. Tune's Hyperband halves a bracket once all the trials it holds got
    # there, so all five trials run at once (see the README's scheduler table).
    result = search(tiny(tracking, strategy="grid", scheduler="hyperband", num_trials=5,
                         max_epochs=3, concurrency=5, cpus_per_trial=0.4))
    client, trials = trial_runs(tracking, result.parent_run_id)
    steps = {r.info.status: [] for r in trials}
    for r in trials:
        steps[r.info.status].append(len(client.get_metric_history(r.info.run_id, "val_accuracy")))
    assert sorted(steps) == ["FINISHED", "KILLED"]
    assert len(steps["KILLED"]) == 2 and set(steps["KILLED"]) == {1}
    assert set(steps["FINISHED"]) == {3}


def test_median_rule_runs(tracking):
    result = search(tiny(tracking, scheduler="median", num_trials=4, max_epochs=2))
    _, trials = trial_runs(tracking, result.parent_run_id)
    assert len(trials) == 4 and {r.info.status for r in trials} <= {"FINISHED", "KILLED"}


def test_asha_on_data_fractions_stops_trials_on_small_subsets(tracking):
    result = search(tiny(tracking, strategy="grid", scheduler="asha", fidelity="data",
                         num_trials=6, max_epochs=1))
    client, trials = trial_runs(tracking, result.parent_run_id)
    seen = {}
    for r in trials:
        history = client.get_metric_history(r.info.run_id, "data_fraction")
        seen.setdefault(r.info.status, []).append([(m.step, round(m.value, 3)) for m in history])
    rungs = [(1, 0.111), (3, 0.333), (9, 1.0)]  # step = budget, in units of the smallest rung
    assert seen["FINISHED"] and all(h == rungs for h in seen["FINISHED"])
    assert seen["KILLED"] and all(h == rungs[: len(h)] and len(h) < 3 for h in seen["KILLED"])


def test_pbt_exploits_better_trials_mid_training(tracking):
    # All four trials train at once, so at every perturbation (each epoch) there is a bottom
    # quarter to exploit the top one.
    result = search(tiny(tracking, space="fixed_cnn", scheduler="pbt", max_epochs=4, seed=1,
                         concurrency=4, cpus_per_trial=0.5))
    client, trials = trial_runs(tracking, result.parent_run_id)
    assert len(trials) == 4 and all(r.info.status == "FINISHED" for r in trials)
    layers = {json.dumps(json.loads(r.data.params["arch.layers.count"])) for r in trials}
    assert layers == {"2"}
    # An exploit restarts a trial from a better one's checkpoint (its epoch, possibly one
    # behind) with mutated hyperparameters: the learning rate in force changes mid-trial.
    histories = [client.get_metric_history(r.info.run_id, "lr") for r in trials]
    for history in histories:
        steps = [m.step for m in history]
        assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == 4
    assert any(len({m.value for m in h}) > 1 for h in histories)
