"""``raynas export``: an MLflow model as TorchScript or ONNX, checked against PyTorch.

MLflow keeps raynas models as ``torch.export`` programs (its ``pt2`` format); serving outside
Python wants TorchScript (LibTorch) or ONNX (onnxruntime, TensorRT, browsers). PyTorch's own
exporters convert the program: ``torch.jit.trace`` (TorchScript is deprecated in PyTorch, but
LibTorch still runs only that), and ``torch.onnx.export``'s dynamo exporter, which takes the
program as it is, dynamic batch included. The written file is loaded back (ONNX into
onnxruntime) and run on the model's logged input example and on random batches of other sizes;
only if its largest absolute difference from the PyTorch model is within tolerance is it logged
on the model's run, as ``export/<file>`` with the difference as a metric.

A detector (``BoxPredictor``, kept by MLflow as a pickle: ``torch.export`` stops at its NMS)
exports another way. Its post-processing (top-k, NMS, a box count per image) is written by
torchvision for ``torch.jit.script`` and for the tracing ONNX exporter, not for ``torch.export``,
so TorchScript scripts it and ONNX traces it (``dynamo=False``). The searched backbone is not
scriptable Python (comprehensions, ``OrderedDict`` building), so it is traced first, at the
example's size: every image reaches it at that size, as torchvision's transform keeps images at
the model's input shape. The tracing ONNX exporter unrolls the per-image loop, so the ONNX file
takes one image (1, 3, H, W). Outputs are compared after NMS: per image, the boxes scored
``CONFIDENT`` or more must be as many, and each within tolerance of its nearest counterpart,
as sets: onnxruntime moves scores by ~1e-7, which reorders boxes of nearly equal scores (seen
with RetinaNet's overlapping anchors), and near the detector's own score threshold may drop one,
which says nothing of the export.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import pickle
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raynas.errors import ConfigError, RaynasError
from raynas.estimation.detection import BoxPredictor
from raynas.tracking.store import connect, last_line, tracking_uri

# One progress bar per downloaded artifact (space.yaml, architecture.json, …) is stderr noise.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
FORMATS = {"torchscript": "model.pt", "onnx": "model.onnx"}
ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")  # the `export` extra
# Relative to the largest |output|: exporters fuse and reorder float32 kernels, which moves
# outputs by ~1e-7 of their size (measured), never by 1e-4 unless the graph changed.
RTOL = 1e-4
RANDOM_BATCHES = (1, 16)  # sizes besides the input example's: a batch of one, a larger one
#: A detector's boxes compared after NMS: those scored this much or more (torchvision's FCOS
#: default score threshold).
CONFIDENT = 0.2
ONNX_OPSET = 17  # the tracing exporter's; torchvision's detectors need 11 or more


@dataclass
class Exported:
    path: Path
    format: str
    max_abs_diff: float
    tolerance: float
    batch_sizes: list[int]  # of the inputs compared: the input example's, then random ones
    run_id: str
    artifact: str  # runs:/RUN_ID/export/FILE
    boxes_compared: int | None = None  # a detector's: the boxes scored CONFIDENT or more


def export_model(model_uri: str, fmt: str, output: str = "export",
                 tracking: str | None = None) -> Exported:
    """Export ``model_uri`` (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``runs:/ID/PATH``)
    to ``output``/model.pt|.onnx, check it numerically and log it on the model's run."""
    import mlflow
    import torch
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    if fmt not in FORMATS:
        raise ConfigError(f"--format: {fmt!r}: expected one of {', '.join(FORMATS)}")
    if not model_uri.startswith(("models:/", "runs:/")):
        raise ConfigError(f"MODEL_URI: {model_uri!r}: expected models:/NAME/VERSION, "
                          "models:/NAME@ALIAS or runs:/RUN_ID/PATH")
    if fmt == "onnx" and (missing := [m for m in ONNX_MODULES
                                      if importlib.util.find_spec(m) is None]):
        raise ConfigError(f"--format onnx: needs {', '.join(missing)}: "
                          "pip install 'raynas[export]'")
    client = connect(tracking_uri(tracking))
    with tempfile.TemporaryDirectory() as folder:
        try:
            local = Path(mlflow.artifacts.download_artifacts(
                model_uri, dst_path=folder, tracking_uri=client.tracking_uri))
            model = Model.load(local)
        except (MlflowException, OSError) as exc:
            raise ConfigError(f"MODEL_URI: {model_uri}: "
                              f"{last_line(getattr(exc, 'message', str(exc)))}") from None
        example = model.load_input_example(str(local))
        program_file = local / model.flavors.get("pytorch", {}).get("model_data", "data") / \
            "model.pt2"
        program = torch.export.load(program_file) if program_file.is_file() else None
        detector = None
        if program is None and example is not None:
            try:  # a pickle: a raynas detector, or something raynas did not log
                loaded = mlflow.pytorch.load_model(str(local))
            except (MlflowException, OSError, ImportError, AttributeError,
                    pickle.UnpicklingError):
                loaded = None
            detector = loaded if isinstance(loaded, BoxPredictor) else None
        if example is None or not model.run_id or (program is None and detector is None):
            raise ConfigError(f"MODEL_URI: {model_uri}: not a PyTorch model in MLflow's pt2 "
                              "format, nor a raynas detector, with an input example, logged in "
                              "a run (what raynas logs)")
    first = torch.as_tensor(np.asarray(example, dtype=np.float32))
    generator = torch.Generator().manual_seed(0)
    inputs = [first] + [
        # a detector finds nothing in noise: batches of the example's (real) images
        first[torch.randint(len(first), (n,), generator=generator)] if detector is not None else
        torch.randn(n, *example.shape[1:], generator=generator) for n in RANDOM_BATCHES]
    path = Path(output).expanduser().resolve() / FORMATS[fmt]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if detector is not None:
            reference = detector.eval()  # the exporters set every module to the top's mode
            run = (_onnx_detector if fmt == "onnx" else _script_detector)(detector, first, path)
        else:
            reference = program.module()
            run = _onnx(program, path) if fmt == "onnx" else _torchscript(program, first, path)
    except RaynasError:
        raise
    except Exception as exc:  # noqa: BLE001 - the exporters raise anything; one line for the CLI
        raise RaynasError(f"--format {fmt}: the export failed: "
                          f"{last_line(str(exc)) or type(exc).__name__}") from None
    with torch.no_grad():
        expected = [reference(x).numpy() for x in inputs]
    got = [run(x) for x in inputs]
    boxes = None
    if detector is not None:
        diff, boxes = _box_diff(expected, got, fmt, path)
        if not boxes:
            raise RaynasError(f"--format {fmt}: the model finds no box scored {CONFIDENT} or "
                              "more in its input example's images: nothing to check "
                              f"{path} by; not logged")
    else:
        diff = max(float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=True))
    tolerance = RTOL * max(1.0, max(float(np.abs(e).max()) for e in expected))
    if not diff <= tolerance:
        raise RaynasError(f"--format {fmt}: {path} differs from the PyTorch model by up to "
                          f"{diff:.3g} (tolerance {tolerance:.3g}); not logged")
    client.log_artifact(model.run_id, str(path), "export")
    client.log_metric(model.run_id, f"export_{fmt}_max_abs_diff", diff)
    artifact = f"runs:/{model.run_id}/export/{path.name}"
    client.set_tag(model.run_id, f"raynas.export.{fmt}", artifact)
    return Exported(path, fmt, diff, tolerance, [len(x) for x in inputs], model.run_id,
                    artifact, boxes)


Runner = Callable[[Any], np.ndarray]  # a torch.Tensor batch -> the exported model's output


def _torchscript(program, example, path: Path) -> Runner:
    import torch

    with warnings.catch_warnings():
        # torch.jit is deprecated in favour of torch.export; the program's input-shape guards
        # trace as constants (the example's non-batch dimensions, which every input shares).
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.jit.save(torch.jit.trace(program.module(), example), str(path))
        loaded = torch.jit.load(str(path))

    def run(x):
        with torch.no_grad():
            return loaded(x).numpy()

    return run


def _onnx(program, path: Path) -> Runner:
    import onnxruntime
    import torch

    # external_data=False: one self-contained file (raynas models are far below ONNX's 2 GB).
    torch.onnx.export(program, f=str(path), dynamo=True, external_data=False, verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})[0]


def _box_diff(expected: list[np.ndarray], got: list[np.ndarray], fmt: str, path: Path
              ) -> tuple[float, int]:
    """Over every image, the largest difference between a box scored ``CONFIDENT`` or more and
    its nearest counterpart, each way (rows of nearly equal scores may swap); and how many boxes
    were compared. Unless as many boxes on both sides in each image, a one-line error."""
    diff, boxes = 0.0, 0
    images = (im for batch, out in zip(expected, got, strict=True)
              for im in zip(batch, out, strict=True))
    for i, (e, g) in enumerate(images):
        e, g = e[e[:, 4] >= CONFIDENT], g[g[:, 4] >= CONFIDENT]
        if len(e) != len(g):
            raise RaynasError(f"--format {fmt}: {path} finds {len(g)} boxes scored "
                              f"{CONFIDENT} or more in an image where the PyTorch model finds "
                              f"{len(e)} (image {i} of the inputs compared); not logged")
        if len(e):
            apart = np.abs(e[:, None] - g[None]).max(-1)  # every box against every box
            diff = max(diff, float(apart.min(1).max()), float(apart.min(0).max()))
            boxes += len(e)
    return diff, boxes


def _traced_backbone(predictor: BoxPredictor, example) -> BoxPredictor:
    """A copy of ``predictor`` whose backbone is traced at the size torchvision's transform
    gives ``example``: the searched backbone is not scriptable, the rest of the detector is."""
    import torch

    model = copy.deepcopy(predictor)
    with torch.no_grad():
        batch = model.detector.transform(list(example))[0].tensors
        # strict=False: the backbone returns an OrderedDict of feature maps
        model.detector.backbone = torch.jit.trace(model.detector.backbone, batch, strict=False)
    return model


def _script_detector(predictor: BoxPredictor, example, path: Path) -> Runner:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.jit.save(torch.jit.script(_traced_backbone(predictor, example)), str(path))
        loaded = torch.jit.load(str(path))

    def run(x):
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # scripted detectors' (losses, boxes)
            return loaded(x).numpy()

    return run


def _onnx_detector(predictor: BoxPredictor, example, path: Path) -> Runner:
    import onnxruntime
    import torch

    try:
        with warnings.catch_warnings(), _output_discarded():
            warnings.simplefilter("ignore")  # the tracer's and the deprecated exporter's
            torch.onnx.export(predictor, (example[:1],), str(path), dynamo=False,
                              opset_version=ONNX_OPSET, input_names=["images"],
                              output_names=["boxes"])
    except torch.onnx.errors.OnnxExporterError as exc:
        # The first line says what: e.g. a dense connection's adaptive pooling to a size read
        # from its input, which the tracing exporter keeps symbolic. (The dynamo exporter stops
        # earlier, in torch.export: the post-processing's shapes are data-dependent.)
        what = str(exc).splitlines()[0].split(" [Caused by")[0].split(". Please feel free")[0]
        what = what.rstrip(".")
        if "adaptive pooling" in what:
            what += " (dense connections and BiFPN nodes pool to the size of another input)"
        raise RaynasError(f"--format onnx: torch.onnx's tracing exporter (the one that handles "
                          f"torchvision's NMS) cannot export this detector: {what}; "
                          "--format torchscript can") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(x):  # the file takes one image: the tracer unrolled the loop over the batch
        return np.concatenate([session.run(None, {"images": x[i:i + 1].numpy()})[0]
                               for i in range(len(x))])

    return run


@contextlib.contextmanager
def _output_discarded() -> Iterator[None]:
    """File descriptors 1 and 2 to /dev/null. torch's tracing ONNX exporter writes the whole
    graph to C++'s std::cout when a conversion fails (its log switch tests a function object,
    which is always true); Python's redirect_stdout does not reach C++, so the descriptors are
    swapped."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        for fd, copy_of in enumerate(saved, start=1):
            os.dup2(copy_of, fd)
            os.close(copy_of)
