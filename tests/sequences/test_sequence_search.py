"""One real search on a bundled variable-length UCR set (JapaneseVowels: 12 channels, 7 to 29
steps, NaN padding): real Ray, real MLflow; the final model is retrained, registered, reloaded
with its padded input example and exported to TorchScript; ``raynas retrain`` trains it
again."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from raynas.config import SearchConfig, Tracking
from raynas.data import load_dataset
from raynas.experiment.driver import search
from raynas.experiment.export import export_model
from raynas.experiment.retrain import retrain_best


def test_attention_search_on_variable_length_series(ray_local, tracking, tmp_path):
    result = search(SearchConfig(
        space="conv_attention_1d", dataset="ucr:JapaneseVowels", strategy="random",
        scheduler="fifo", num_trials=2, max_epochs=1, retrain_epochs=1,
        tracking=Tracking(tracking_uri=tracking, storage=str(tmp_path / "ray"))))
    assert result.num_failed == 0 and result.num_trials == 2
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_run(result.parent_run_id).info.experiment_id])
    for trial in (r for r in runs if r.data.tags.get("raynas.role") == "trial"):
        metrics = trial.data.metrics
        assert 0 <= metrics["val_accuracy"] <= 1
        assert metrics["flops"] > 0 and metrics["params"] > 0 and metrics["latency_ms"] > 0

    data = load_dataset("ucr:JapaneseVowels")
    assert np.isnan(data.x_test).any()  # padded series reach the logged model
    model = mlflow.pytorch.load_model(result.model_uri)
    with torch.no_grad():
        predicted = model(torch.as_tensor(data.x_test)).argmax(1).numpy()
    assert np.mean(predicted == data.y_test) == pytest.approx(result.best["test_accuracy"])

    exported = export_model(result.model_uri, "torchscript", str(tmp_path / "export"), tracking)
    assert exported.max_abs_diff <= exported.tolerance
    assert len(set(exported.batch_sizes)) == 3  # the example's batch and two others

    again = retrain_best(result.parent_run_id, epochs=1, top_k=1, seeds=1, tracking=tracking)
    [outcome] = again.outcomes
    assert outcome.arch == result.best["arch"] and 0 <= outcome.test_accuracies[0] <= 1
