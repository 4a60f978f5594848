"""``raynas export``: an MLflow model as TorchScript or ONNX, checked against PyTorch.

MLflow keeps raynas models as ``torch.export`` programs (its ``pt2`` format); serving outside
Python wants TorchScript (LibTorch) or ONNX (onnxruntime, TensorRT, browsers). PyTorch's own
exporters convert the program: ``torch.jit.trace`` (TorchScript is deprecated in PyTorch, but
LibTorch still runs only that), and ``torch.onnx.export``'s dynamo exporter, which takes the
program as it is, dynamic batch included. The written file is loaded back (ONNX into
onnxruntime) and run on the model's logged input example and on random batches of other sizes;
only if its largest absolute difference from the PyTorch model is within tolerance is it logged
on the model's run, as ``export/<file>`` with the difference as a metric.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raynas.errors import ConfigError, RaynasError
from raynas.tracking.store import connect, last_line, tracking_uri

# One progress bar per downloaded artifact (space.yaml, architecture.json, …) is stderr noise.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
FORMATS = {"torchscript": "model.pt", "onnx": "model.onnx"}
ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")  # the `export` extra
# Relative to the largest |output|: exporters fuse and reorder float32 kernels, which moves
# outputs by ~1e-7 of their size (measured), never by 1e-4 unless the graph changed.
RTOL = 1e-4
RANDOM_BATCHES = (1, 16)  # sizes besides the input example's: a batch of one, a larger one


@dataclass
class Exported:
    path: Path
    format: str
    max_abs_diff: float
    tolerance: float
    batch_sizes: list[int]  # of the inputs compared: the input example's, then random ones
    run_id: str
    artifact: str  # runs:/RUN_ID/export/FILE


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
        if example is None or not program_file.is_file() or not model.run_id:
            raise ConfigError(f"MODEL_URI: {model_uri}: not a PyTorch model in MLflow's pt2 "
                              "format with an input example, logged in a run (what raynas logs)")
        program = torch.export.load(program_file)
    reference = program.module()
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.as_tensor(np.asarray(example, dtype=np.float32))] + [
        torch.randn(n, *example.shape[1:], generator=generator) for n in RANDOM_BATCHES]
    path = Path(output).expanduser().resolve() / FORMATS[fmt]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        run = _onnx(program, path) if fmt == "onnx" else _torchscript(program, inputs[0], path)
    except Exception as exc:  # noqa: BLE001 - the exporters raise anything; one line for the CLI
        raise RaynasError(f"--format {fmt}: the export failed: "
                          f"{last_line(str(exc)) or type(exc).__name__}") from None
    with torch.no_grad():
        expected = [reference(x).numpy() for x in inputs]
    diff = max(float(np.abs(run(x) - e).max()) for x, e in zip(inputs, expected, strict=True))
    tolerance = RTOL * max(1.0, max(float(np.abs(e).max()) for e in expected))
    if not diff <= tolerance:
        raise RaynasError(f"--format {fmt}: {path} differs from the PyTorch model by up to "
                          f"{diff:.3g} (tolerance {tolerance:.3g}); not logged")
    client.log_artifact(model.run_id, str(path), "export")
    client.log_metric(model.run_id, f"export_{fmt}_max_abs_diff", diff)
    artifact = f"runs:/{model.run_id}/export/{path.name}"
    client.set_tag(model.run_id, f"raynas.export.{fmt}", artifact)
    return Exported(path, fmt, diff, tolerance, [len(x) for x in inputs], model.run_id,
                    artifact)


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
