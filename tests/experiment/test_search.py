"""End-to-end searches on a real local Ray, real training on digits, a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from searches import child_runs

import raynas
from raynas.config import Failures, Resources, SearchConfig
from raynas.data import load_dataset
from raynas.errors import RaynasError
from raynas.experiment.driver import search


def test_default_search_finds_an_accurate_architecture_and_mlflow_holds_it_all(
        ray_local, tracking):
    config = SearchConfig(num_trials=6, max_epochs=4, retrain_epochs=10, seed=0)
    result = search(config)

    # the found architecture beats chance (10 %) by far on the held-out test split
    assert result.best["test_accuracy"] >= 0.95
    assert result.num_trials == 6 and result.num_failed == 0

    client = MlflowClient(tracking)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["raynas.strategy"] == "tpe"
    assert parent.data.tags["raynas.scheduler"] == "asha"
    assert parent.data.tags["raynas.space"] == "macro_cnn"
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"space.yaml", "best_architecture.json"} <= artifacts

    trials = child_runs(client, result, "trial")
    assert len(trials) == 6
    statuses = set()
    for run in trials:
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        epochs = [m.step for m in history]
        assert epochs == list(range(1, len(epochs) + 1))  # one point per epoch, step = epoch
        assert run.data.params["arch.layers.count"]
        assert "raynas.arch_hash" in run.data.tags
        expected = "FINISHED" if len(epochs) == config.max_epochs else "KILLED"
        assert run.info.status == expected
        statuses.add(run.info.status)
        arch = json.loads(mlflow.artifacts.load_text(
            f"runs:/{run.info.run_id}/architecture.json"))
        assert arch["space"] == "macro_cnn"
    assert "KILLED" in statuses  # ASHA stopped some trials early

    # the final model: registered, loadable, and it reproduces its test accuracy
    final, = child_runs(client, result, "final")
    assert final.data.tags["raynas.model_uri"] == result.model_uri
    name, version = result.model_uri.split("/")[1:]
    assert client.get_model_version(name, version).status == "READY"
    model = mlflow.pytorch.load_model(result.model_uri)
    data = load_dataset("digits", seed=0)
    with torch.no_grad():
        predicted = model(torch.as_tensor(data.x_test)).argmax(1).numpy()
    assert np.mean(predicted == data.y_test) == pytest.approx(result.best["test_accuracy"])
    # its environment names what unpickling it takes: torch, and raynas (its module classes)
    requirements = (Path(mlflow.artifacts.download_artifacts(result.model_uri))
                    / "requirements.txt").read_text().split()
    assert f"raynas=={raynas.__version__}" in requirements
    assert any(r.startswith("torch==") for r in requirements)


def test_failing_trial_is_recorded_and_the_search_goes_on(ray_local, tracking, tmp_path):
    space = tmp_path / "explodes.yaml"
    space.write_text(
        "name: explodes\nspace:\n  layers:\n    repeat: [1, 1]\n    block:\n"
        "      op: conv_3x3\n      channels: 16\n      stride: 1\n      connection: series\n"
        "  train:\n    lr: {choice: [0.01, 1.0e+30]}\n    optimizer: sgd\n")
    result = search(SearchConfig(space=str(space), strategy="grid", scheduler="fifo",
                                 max_epochs=2, retrain_epochs=1))
    assert (result.num_trials, result.num_failed) == (2, 1)
    assert result.best["arch"]["train"]["lr"] == 0.01
    client = MlflowClient(tracking)
    failed = [r for r in child_runs(client, result, "trial") if r.info.status == "FAILED"]
    assert len(failed) == 1
    assert "non-finite training loss" in failed[0].data.tags["raynas.error"]


def test_max_failed_trials_ends_the_search(ray_local, tracking, tmp_path):
    space = tmp_path / "explodes.yaml"
    space.write_text(
        "name: explodes\nspace:\n  layers:\n    repeat: [1, 1]\n    block:\n"
        "      op: conv_3x3\n      channels: 16\n      stride: 1\n      connection: series\n"
        "  train:\n    lr: {choice: [1.0e+30, 1.0e+31, 1.0e+32, 0.01]}\n    optimizer: sgd\n")
    with pytest.raises(RaynasError, match=r"all 2 trials failed; first error: FloatingPoint"):
        search(SearchConfig(space=str(space), strategy="grid", scheduler="fifo", max_epochs=2,
                            resources=Resources(concurrency=1),
                            failures=Failures(max_retries=0, max_failed_trials=2)))


def test_sequence_data_builds_conv1d_networks_that_learn(ray_local, tracking, tmp_path):
    """(N, C, L) arrays from an .npz: the same space builds Conv1d networks, which beat chance."""
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 32)
    freq = rng.integers(0, 3, 600)
    x = np.sin(2 * np.pi * (2 + 3 * freq)[:, None] * t + rng.uniform(0, 6, (600, 1)))
    x = np.stack([x, rng.normal(0, 0.3, x.shape)], axis=1)  # 2 channels: signal, noise
    np.savez(tmp_path / "waves.npz", x=x, y=freq, layout="NCL")
    result = search(SearchConfig(space="small_cnn", dataset=f"npz:{tmp_path / 'waves.npz'}",
                                 strategy="random", scheduler="fifo", num_trials=2,
                                 max_epochs=3, retrain_epochs=5))
    # MLflow stores the model as a torch.export program: loadable without raynas installed
    model = mlflow.pytorch.load_model(result.model_uri)
    ops = {str(n.target) for n in model.graph.nodes if n.op == "call_function"}
    assert "aten.conv1d.default" in ops and "aten.conv2d.default" not in ops
    assert result.best["test_accuracy"] > 0.8  # chance is 1/3


def test_nsga2_under_asha_searches_two_objectives_end_to_end(ray_local, tracking):
    """Issue 20: the README's multi-objective pair under the default scheduler."""
    result = search(SearchConfig(strategy="nsga2", objective=["val_accuracy:max", "params:min"],
                                 num_trials=4, max_epochs=2, retrain_epochs=1, seed=0))
    assert result.num_trials == 4 and result.num_failed == 0
    client = MlflowClient(tracking)
    pareto = json.loads(mlflow.artifacts.load_text(
        f"runs:/{result.parent_run_id}/pareto.json"))
    assert pareto["objectives"] == ["val_accuracy:max", "params:min"] and pareto["front"]
    assert client.get_run(result.parent_run_id).data.tags["raynas.scheduler"] == "asha"


def test_a_time_budget_stops_the_trials_and_fits_the_retraining_in_the_rest(ray_local,
                                                                            tracking):
    """--time-budget covers the whole search: Tune stops the trials with a fifth of it left,
    and the retraining runs as many epochs as fit in what remains."""
    budget = 60
    result = search(SearchConfig(strategy="random", scheduler="fifo", num_trials=500,
                                 max_epochs=3, retrain_epochs=10_000, time_budget=f"{budget}s"))
    assert 0 < result.num_trials < 500  # stopped by the budget, not by the trial count
    final = MlflowClient(tracking).search_runs(
        [MlflowClient(tracking).get_experiment_by_name(result.experiment).experiment_id],
        "tags.`raynas.role` = 'final'")[0]
    epochs = len(MlflowClient(tracking).get_metric_history(final.info.run_id, "train_loss"))
    assert 1 <= epochs < 10_000  # cut to the time left, not the 10,000 asked for
    assert result.wall_time_s < 2 * budget
