"""``raynas export`` of a detector: the detection task's exporter (``Task.export``).

A detector (``BoxPredictor``, kept by MLflow as a pickle: ``torch.export`` stops at its NMS)
cannot go through the core's ``torch.export`` path. Its post-processing (top-k, NMS, a box count
per image) is written by torchvision for ``torch.jit.script`` and for the tracing ONNX exporter,
not for ``torch.export``, so TorchScript scripts it and ONNX traces it (``dynamo=False``). The
searched backbone is not scriptable Python (comprehensions, ``OrderedDict`` building), so it is
traced first, at the example's size: every image reaches it at that size, as torchvision's
transform keeps images at the model's input shape. The tracing ONNX exporter unrolls the
per-image loop, so the ONNX file takes one image (1, 3, H, W).

A detector finds nothing in noise, so the random batches are drawn from the example's (real)
images. Outputs are compared after NMS: per image, the boxes scored ``CONFIDENT`` or more must be
as many, and each within tolerance of its nearest counterpart, as sets: onnxruntime moves scores
by ~1e-7, which reorders boxes of nearly equal scores (seen with RetinaNet's overlapping
anchors), and near the detector's own score threshold may drop one, which says nothing of the
export.
"""

from __future__ import annotations

import contextlib
import copy
import os
import pickle
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException

from raynas.errors import ConfigError, RaynasError
from raynas.experiment.export import RANDOM_BATCHES, Check, Runner, tolerance
from raynas.tasks.detection.train import BoxPredictor

#: A detector's boxes compared after NMS: those scored this much or more (torchvision's FCOS
#: default score threshold).
CONFIDENT = 0.2
ONNX_OPSET = 17  # the tracing exporter's; torchvision's detectors need 11 or more


def export_detector(local: Path, example: np.ndarray, fmt: str, path: Path) -> Check:
    """The ``BoxPredictor`` in MLflow's model folder ``local`` to ``path`` (scripted TorchScript
    or traced ONNX), checked box by box against PyTorch (``raynas.experiment.export.Exporter``)."""
    predictor = _load(local)
    first = torch.as_tensor(example)
    generator = torch.Generator().manual_seed(0)
    inputs = [first] + [first[torch.randint(len(first), (n,), generator=generator)]
                        for n in RANDOM_BATCHES]
    reference = predictor.eval()  # the exporters set every module to the top's mode
    run = (_onnx if fmt == "onnx" else _torchscript)(predictor, first, path)
    with torch.no_grad():
        expected = [reference(x).numpy() for x in inputs]
    diff, boxes = box_diff(expected, [run(x) for x in inputs], fmt, path)
    if not boxes:
        raise RaynasError(f"--format {fmt}: the model finds no box scored {CONFIDENT} or more "
                          f"in its input example's images: nothing to check {path} by; "
                          "not logged")
    return Check(diff, tolerance(expected), [len(x) for x in inputs],
                 "random batches of its images", f"{boxes} boxes scored >= {CONFIDENT} matched")


def _load(local: Path) -> BoxPredictor:
    """The pickled ``BoxPredictor`` in MLflow's model folder ``local``."""
    try:
        loaded = mlflow.pytorch.load_model(str(local))
    except (MlflowException, OSError, ImportError, AttributeError, pickle.UnpicklingError):
        loaded = None
    if not isinstance(loaded, BoxPredictor):
        raise ConfigError("MODEL_URI: a detection search's model, but not the BoxPredictor it "
                          "logs (a batch of images in, boxes out)")
    return loaded


def box_diff(expected: list[np.ndarray], got: list[np.ndarray], fmt: str, path: Path
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
    model = copy.deepcopy(predictor)
    with torch.no_grad():
        batch = model.detector.transform(list(example))[0].tensors
        # strict=False: the backbone returns an OrderedDict of feature maps
        model.detector.backbone = torch.jit.trace(model.detector.backbone, batch, strict=False)
    return model


def _torchscript(predictor: BoxPredictor, example, path: Path) -> Runner:
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


def _onnx(predictor: BoxPredictor, example, path: Path) -> Runner:
    import onnxruntime  # the `export` extra: only --format onnx needs it

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
