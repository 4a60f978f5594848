"""One real segmentation search on NIfTI volumes written to disk: real Ray, a real SQLite MLflow
store; trials log Dice, the final model is registered with its picture of predicted slices, and
it segments the held-out volumes better than the best intensity threshold."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from raynas.config import SearchConfig, Tracking
from raynas.data import load_dataset
from raynas.experiment.driver import search
from raynas.tasks.segmentation.baselines import threshold_scores
from raynas.tasks.segmentation.data import write_synthetic


@pytest.mark.e2e
def test_segmentation_search_end_to_end(ray_local, tracking, tmp_path):
    root = write_synthetic(tmp_path / "volumes", count=12, size=16, classes=2)
    result = search(SearchConfig(
        space="unet3d_seg", dataset=f"nifti:{root}", strategy="evolution", scheduler="asha",
        num_trials=3, max_epochs=2, retrain_epochs=6, constraint=["peak_memory_mb<=2000"],
        tracking=Tracking(tracking_uri=tracking, storage=str(tmp_path / "ray"))))
    assert result.num_failed == 0 and result.num_trials == 3
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_run(result.parent_run_id).info.experiment_id])
    trials = [r for r in runs if r.data.tags.get("raynas.role") == "trial"]
    assert len(trials) == 3
    for trial in trials:
        metrics = trial.data.metrics
        assert metrics["val_dice"] == metrics["val_accuracy"] == metrics["val_dice_class_1"]
        assert metrics["peak_memory_mb"] > 0 and metrics["flops"] > 0
    [final] = [r for r in runs if r.data.tags.get("raynas.role") == "final"]
    assert final.data.metrics["test_dice"] == result.best["test_accuracy"]
    assert "test_dice_class_1" in final.data.metrics and final.data.metrics["test_hd95"] > 0
    # the found network beats the best intensity threshold on the same test volumes
    threshold = threshold_scores(load_dataset(f"nifti:{root}"))["dice"]
    assert final.data.metrics["test_dice"] > threshold, (final.data.metrics, threshold)
    artifacts = {a.path for a in client.list_artifacts(final.info.run_id)}
    assert "final_segmentation.png" in artifacts
    picture = client.download_artifacts(final.info.run_id, "final_segmentation.png",
                                        str(tmp_path))
    assert Path(picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.model_uri.startswith("models:/unet3d_seg/")
