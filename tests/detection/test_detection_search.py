"""One real detection search on COCO files written to disk: real Ray, a real SQLite MLflow store.
Trials report COCO mAP every epoch with their costs; the final detector is retrained,
registered with its picture of predicted boxes, and serves boxes through MLflow's pyfunc. Bad
input is refused by ``raynas search`` with one line and exit code 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from raynas.cli import main
from raynas.config import SearchConfig, Tracking
from raynas.experiment.driver import search
from raynas.experiment.resolve import resolve
from raynas.objectives.scalarize import fixed_range
from raynas.space import builtin_dir
from raynas.tasks.detection.data import write_synthetic
from raynas.tasks.detection.train import MAX_BOXES

EPOCHS = 3


@pytest.fixture(scope="module")
def few(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("coco") / "few", count=60, size=64)


def test_detection_search_end_to_end(ray_local, tracking, tmp_path, few):
    result = search(SearchConfig(
        space="detection", dataset=f"coco:{few}", strategy="tpe", scheduler="asha",
        num_trials=3, max_epochs=EPOCHS, retrain_epochs=2, constraint=["latency_ms<=5000"],
        tracking=Tracking(tracking_uri=tracking, storage=str(tmp_path / "ray"))))
    assert result.num_failed == 0 and result.num_trials == 3
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_run(result.parent_run_id).info.experiment_id])
    trials = [r for r in runs if r.data.tags.get("raynas.role") == "trial"]
    assert len(trials) == 3
    for trial in trials:
        metrics = trial.data.metrics
        assert metrics["val_accuracy"] == metrics["val_map"]  # COCO's primary metric
        assert 0 <= metrics["val_map"] <= metrics["val_map_50"] <= 1
        assert metrics["params"] > 0 and metrics["flops"] > 0
        assert metrics["latency_ms"] > 0 and metrics["peak_memory_mb"] > 0
        # one step per epoch trained, as ASHA saw them (it may stop a trial early)
        steps = [m.step for m in client.get_metric_history(trial.info.run_id, "val_map_50")]
        assert steps == list(range(1, len(steps) + 1)) and 1 <= len(steps) <= EPOCHS
    [final] = [r for r in runs if r.data.tags.get("raynas.role") == "final"]
    assert final.data.metrics["test_map"] == result.best["test_accuracy"]
    assert 0 <= final.data.metrics["test_map_50"] <= 1
    picture = client.download_artifacts(final.info.run_id, "final_detections.png",
                                        str(tmp_path))
    assert Path(picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.model_uri.startswith("models:/detection/")
    # served: a batch of images in, (N, MAX_BOXES, 6) boxes out
    mlflow.set_tracking_uri(tracking)
    model = mlflow.pyfunc.load_model(result.model_uri)
    example = np.load(Path(result.folder) / "final_example.npy")
    boxes = model.predict(example)
    assert boxes.shape == (len(example), MAX_BOXES, 6)
    found = boxes[0][boxes[0, :, 5] > 0]
    assert len(found) and (found[:, 2] > found[:, 0]).all() and (found[:, 4] <= 1).all()


@pytest.mark.parametrize(("args", "message"), [
    (["--space", "small_cnn"], "--space small_cnn: model 'macro' classifies, and the dataset "
                               "has boxes per image; use a detection space (detection)"),
    (["--strategy", "zero_cost"], "--strategy zero_cost: looks at the data itself and scores "
                                  "networks by a loss on their outputs, which a detection search"),
    (["--fidelity", "data"], "--fidelity/--proxy-task data: not for a detection search, whose "
                             "proxy tasks may vary nothing but epochs"),
])
def test_what_a_detection_search_cannot_do_is_refused(few, capsys, args, message):
    code = main(["search", "--space", "detection", "--dataset", f"coco:{few}", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_a_detection_space_on_labels_is_refused(capsys):
    assert main(["search", "--space", "detection", "--dataset", "digits"]) == 2
    err = capsys.readouterr().err.strip()
    assert "model 'detection' detects objects" in err and "coco:DIR" in err


def test_broken_coco_files_are_refused_in_one_line(few, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(few, broken)
    (broken / "images" / "img0003.png").unlink()
    assert main(["search", "--space", "detection", "--dataset", f"coco:{broken}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "image file not found" in err and "img0003.png" in err and len(err.splitlines()) == 1
    doc = json.loads((few / "annotations.json").read_text())
    doc["annotations"][0]["bbox"] = [50, 50, 40, 40]  # out of a 64x64 image
    (broken / "annotations.json").write_text(json.dumps(doc))
    shutil.copy(few / "images" / "img0003.png", broken / "images")
    assert main(["search", "--space", "detection", "--dataset", f"coco:{broken}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "annotation 1" in err and "out of the bounds" in err


def test_the_fixed_baseline_retrains_from_its_file(ray_local, tracking, few, capsys):
    baseline = builtin_dir() / "detection_baseline.json"
    assert main(["retrain", str(baseline), "--dataset", f"coco:{few}", "--epochs", "1",
                 "--seeds", "1", "--tracking-uri", tracking]) == 0
    out = capsys.readouterr()
    assert "test_map_50" in out.err and "models:/detection/1" in out.out
    version = MlflowClient(tracking).get_model_version("detection", "1")
    metrics = MlflowClient(tracking).get_run(version.run_id).data.metrics
    assert metrics["test_accuracy"] == metrics["test_map"] and "test_map_50" in metrics


def test_a_detection_search_takes_several_objectives_and_scalarises_maps(few):
    pareto = resolve(SearchConfig(space="detection", dataset=f"coco:{few}", strategy="nsga2",
                                  objective=["val_map_50:max", "latency_ms:min"]))
    assert pareto.objectives == (("val_map_50", "max"), ("latency_ms", "min"))
    scalar = resolve(SearchConfig(space="detection", dataset=f"coco:{few}", strategy="tpe",
                                  objective=["val_map:max", "params:min"],
                                  scalarize="chebyshev"))
    assert scalar.metric == ("scalarized", "min")
    assert fixed_range("val_map", scalar.data.num_classes) == (0.0, 1.0)


def test_bench_detection_reports_the_search_against_both_fixed_detectors(
        ray_local, tmp_path, few, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "bench.json"
    assert main(["bench", "detection", "--dataset", f"coco:{few}", "--trials", "2",
                 "--max-epochs", "1", "--retrain-epochs", "1", "--output", str(output)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("ratio: ")
    report = json.loads(output.read_text())
    rows = {r["detector"]: r for r in report["rows"]}
    assert rows["baseline"]["head"] == "fcos" and rows["baseline"]["layers"] == 3
    assert rows["reference"]["head"] == "fcos" and rows["reference"]["layers"] == "resnet18"
    assert rows["searched"]["arch_hash"] != rows["baseline"]["arch_hash"]
    assert not (Path.cwd() / "mlruns").exists()  # its MLflow artifacts stayed in its folder
    mean = report["summary"]["mean"]
    assert report["ratio"] == pytest.approx(mean["searched"]["map_50"] / max(
        mean["baseline"]["map_50"], mean["reference"]["map_50"], 1e-9))
