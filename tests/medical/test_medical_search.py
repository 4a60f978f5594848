"""One real segmentation search on NIfTI volumes written to disk: real Ray, a real SQLite MLflow
store; trials log Dice, the final model is registered with its picture of predicted slices."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from raynas.config import SearchConfig, Tracking
from raynas.experiment.driver import search
from raynas.tasks.segmentation.data import write_synthetic


def test_segmentation_search_end_to_end(ray_local, tracking, tmp_path):
    root = write_synthetic(tmp_path / "volumes", count=12, size=12, classes=2)
    result = search(SearchConfig(
        space="unet3d_seg", dataset=f"nifti:{root}", strategy="evolution", scheduler="asha",
        num_trials=3, max_epochs=2, retrain_epochs=2, constraint=["peak_memory_mb<=2000"],
        tracking=Tracking(tracking_uri=tracking, storage=str(tmp_path / "ray"))))
    assert result.num_failed == 0 and result.num_trials == 3
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_run(result.parent_run_id).info.experiment_id])
    trials = [r for r in runs if r.data.tags.get("raynas.role") == "trial"]
    assert len(trials) == 3
    for trial in trials:
        metrics = trial.data.metrics
        assert 0 <= metrics["val_dice"] <= 1
        assert metrics["val_dice"] == metrics["val_accuracy"] == metrics["val_dice_class_1"]
        assert metrics["peak_memory_mb"] > 0 and metrics["flops"] > 0
    [final] = [r for r in runs if r.data.tags.get("raynas.role") == "final"]
    assert final.data.metrics["test_dice"] == result.best["test_accuracy"]
    assert "test_dice_class_1" in final.data.metrics
    artifacts = {a.path for a in client.list_artifacts(final.info.run_id)}
    assert "final_segmentation.png" in artifacts
    picture = client.download_artifacts(final.info.run_id, "final_segmentation.png",
                                        str(tmp_path))
    assert Path(picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.model_uri.startswith("models:/unet3d_seg/")
