"""`raynas export` of a detector: small detectors trained on the demo shapes, logged to a real
SQLite MLflow store as a search logs its final model, exported to TorchScript (scripted) and
ONNX (traced), loaded back as a user would and compared with the PyTorch model after NMS."""

from __future__ import annotations

import re

import mlflow
import numpy as np
import onnxruntime
import pytest
import torch
from mlflow.tracking import MlflowClient

from raynas.cli import main
from raynas.estimation import load_space
from raynas.experiment.export import export_model
from raynas.space import space_yaml
from raynas.tasks.detection.data import load_detection
from raynas.tasks.detection.export import CONFIDENT
from raynas.tasks.detection.train import BoxPredictor, Detector
from raynas.tracking.final_model import log_model_files, save_final_model

CONV = {"op": "conv_3x3", "connection": "series"}
SERIES = [{**CONV, "channels": 16, "stride": 2}, {**CONV, "channels": 32, "stride": 2},
          {**CONV, "channels": 32, "stride": 2, "connection": "skip"}]
DENSE = [{**CONV, "channels": 16, "stride": 2},
         {**CONV, "channels": 32, "stride": 2, "connection": "dense"}]
TRAIN = {"lr": 0.003, "weight_decay": 1e-4, "batch_size": 8, "optimizer": "adam"}
pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),  # torch.jit, ONNX's tracer
              pytest.mark.filterwarnings("ignore:.* always returns a \\(Losses, Detections\\) "
                                         "tuple in scripting:UserWarning")]


def logged(tracking: str, shapes, tmp_path, layers: list[dict], head: str, epochs: int,
           searched_in: str = "detection") -> str:
    """A detector trained for ``epochs`` epochs, logged as a search's final model (in a run
    whose space.yaml is ``searched_in``'s); its URI."""
    data = load_detection(f"coco:{shapes}")
    space = load_space("detection")
    # the fields left out take the builder's defaults (raynas.tasks.detection.model.DEFAULTS)
    arch = {"stem_channels": 16, "layers": layers, "levels": 2, "neck": "fpn",
            "neck_channels": 32, "head": head, "anchor_ratios": "0.5,1,2", "train": TRAIN}
    detector = Detector(space, arch, data, epochs)
    for _ in detector.epochs(validate=False):
        pass
    example = np.stack([data.test[i][0].numpy() for i in range(4)])
    files = save_final_model(tmp_path, BoxPredictor(detector.model), example)
    client = MlflowClient(tracking)
    run = client.create_run(client.create_experiment("detect")).info.run_id
    return log_model_files(client, run, tmp_path, {
        **files, "arch": arch, "space_yaml": space_yaml(load_space(searched_in)), "metrics": {},
        "name": "detector"})


def confident(boxes: np.ndarray) -> list[np.ndarray]:
    """Each image's boxes scored CONFIDENT or more, sorted by label and corners (not by score,
    whose near ties an exporter may order either way)."""
    return [b[np.lexsort(b[:, [3, 2, 1, 0, 5]].T)] for b in
            (image[image[:, 4] >= CONFIDENT] for image in boxes)]


@pytest.mark.parametrize("head, epochs", [("fcos", 4), ("retinanet", 10)])
def test_a_trained_detector_exports_to_torchscript_and_onnx_with_the_same_boxes(
        tracking, shapes, tmp_path, head, epochs):
    uri = logged(tracking, shapes, tmp_path, SERIES, head, epochs)
    data = load_detection(f"coco:{shapes}")
    images = torch.stack([data.test[i][0] for i in range(8)])  # beyond the logged example
    with torch.no_grad():
        expected = mlflow.pytorch.load_model(uri).eval()(images).numpy()
    assert sum(map(len, confident(expected))) >= len(images)  # it found shapes to compare

    script = export_model(uri, "torchscript", str(tmp_path / "ts"))
    onnx = export_model(uri, "onnx", str(tmp_path / "onnx"))
    with torch.no_grad():
        scripted = torch.jit.load(str(script.path))(images).numpy()
    session = onnxruntime.InferenceSession(str(onnx.path))
    traced = np.concatenate([session.run(None, {"images": images[i:i + 1].numpy()})[0]
                             for i in range(len(images))])
    assert scripted.shape == traced.shape == expected.shape == (8, 100, 6)
    # scripting runs PyTorch's own kernels: the same boxes, in the same order
    assert np.abs(scripted - expected).max() <= 1e-4
    # onnxruntime's kernels move scores by ~1e-7: the same confident boxes, to 1e-4 pixel
    for got, want in zip(confident(traced), confident(expected), strict=True):
        assert got.shape == want.shape
        assert np.abs(got - want).max(initial=0.0) <= 1e-4 * 64
    for done in (script, onnx):
        assert done.max_abs_diff <= done.tolerance
        assert done.batch_sizes == [4, 1, 16] and done.inputs == "random batches of its images"
        assert re.fullmatch(rf"[1-9]\d* boxes scored >= {CONFIDENT} matched", done.matched)
    client = MlflowClient(tracking)
    run = client.get_run(script.run_id)
    assert run.data.tags["raynas.export.onnx"] == f"runs:/{script.run_id}/export/model.onnx"
    assert {"export/model.pt", "export/model.onnx"} <= {
        a.path for a in client.list_artifacts(script.run_id, "export")}
    assert run.data.metrics["export_onnx_max_abs_diff"] == pytest.approx(onnx.max_abs_diff)


def error(capsys: pytest.CaptureFixture) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]  # after MLflow's log lines


def test_a_dense_backbone_scripts_but_does_not_trace_to_onnx(tracking, shapes, tmp_path,
                                                             capsys):
    uri = logged(tracking, shapes, tmp_path, DENSE, "fcos", epochs=4)
    assert main(["export", uri, "--format", "onnx", "--output", str(tmp_path / "x")]) == 2
    line = error(capsys)
    assert line.startswith("raynas: error: --format onnx: torch.onnx's tracing exporter")
    assert "adaptive pooling, since output_size is not constant" in line
    assert line.endswith("--format torchscript can")
    run = MlflowClient(tracking).get_run(mlflow.models.get_model_info(uri).run_id)
    assert "raynas.export.onnx" not in run.data.tags  # nothing logged
    assert main(["export", uri, "--format", "torchscript", "--output", str(tmp_path / "x")]) == 0
    assert (tmp_path / "x" / "model.pt").is_file()


def test_a_detector_that_finds_nothing_cannot_be_checked(tracking, shapes, tmp_path, capsys):
    uri = logged(tracking, shapes, tmp_path, SERIES, "fcos", epochs=0)
    assert main(["export", uri, "--format", "torchscript", "--output", str(tmp_path)]) == 2
    assert error(capsys) == (
        f"raynas: error: --format torchscript: the model finds no box scored {CONFIDENT} or "
        f"more in its input example's images: nothing to check {tmp_path / 'model.pt'} by; "
        "not logged")


def test_the_task_of_the_runs_space_picks_the_exporter(tracking, shapes, tmp_path, capsys):
    """A detector logged in a run whose space is a classifier's is exported as that task's
    models are, from MLflow's pt2 program, which a pickled detector does not have."""
    uri = logged(tracking, shapes, tmp_path, SERIES, "fcos", epochs=0, searched_in="small_cnn")
    assert main(["export", uri, "--format", "torchscript", "--output", str(tmp_path)]) == 2
    assert error(capsys) == (
        f"raynas: error: MODEL_URI: {uri}: not a PyTorch model in MLflow's pt2 format, nor one "
        "that its task exports, with an input example, logged in a run (what raynas logs)")
    assert not (tmp_path / "model.pt").exists()
