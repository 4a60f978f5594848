"""``raynas export``: an MLflow model as TorchScript or ONNX, checked against PyTorch.

MLflow keeps raynas models as ``torch.export`` programs (its ``pt2`` format); serving outside
Python wants TorchScript (LibTorch) or ONNX (onnxruntime, TensorRT, browsers). PyTorch's own
exporters convert the program: ``torch.jit.trace`` (TorchScript is deprecated in PyTorch, but
LibTorch still runs only that), and ``torch.onnx.export``'s dynamo exporter, which takes the
program as it is, dynamic batch included. The written file is loaded back (ONNX into
onnxruntime) and run on the model's logged input example and on random batches of other sizes;
only if its largest absolute difference from the PyTorch model is within tolerance is it logged
on the model's run, as ``export/<file>`` with the difference as a metric.

A task whose models ``torch.export`` cannot capture (MLflow keeps those as a pickle) exports them
its own way: the model's run holds the space it was searched in (``space.yaml``), whose builder
names the task, and the task's ``Task.export`` (an ``Exporter``) writes the file and checks it
on the same batch sizes. The tolerance, the logging and the one-line errors are the same.
"""

from __future__ import annotations

import importlib.util
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from raynas.errors import ConfigError, RaynasError
from raynas.estimation.task import TASKS
from raynas.models import builder_of
from raynas.space import read_space
from raynas.tracking.store import connect, last_line, tracking_uri

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient
import mlflow
import torch
import yaml
from mlflow.exceptions import MlflowException
from mlflow.models import Model

FORMATS = {"torchscript": "model.pt", "onnx": "model.onnx"}
ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")  # the `export` extra
# Relative to the largest |output|: exporters fuse and reorder float32 kernels, which moves
# outputs by ~1e-7 of their size (measured), never by 1e-4 unless the graph changed.
RTOL = 1e-4
RANDOM_BATCHES = (1, 16)  # sizes besides the input example's: a batch of one, a larger one

Runner = Callable[[Any], np.ndarray]  # a torch.Tensor batch -> the exported model's output


@dataclass(frozen=True)
class Check:
    """A written file against the PyTorch model: the largest difference over the inputs
    compared and the tolerance it must be within."""

    max_abs_diff: float
    tolerance: float
    batch_sizes: list[int]  # of the inputs compared: the input example's, then random ones
    inputs: str = "random inputs"  # what the random batches are made of
    matched: str = ""  # what else was compared, for the summary (e.g. a detector's boxes)


#: A task's exporter (``Task.export``): (the downloaded MLflow model's folder, its input
#: example as float32, the format, the file to write) -> the written file's ``Check``; a
#: ``RaynasError`` when it cannot export the model.
Exporter = Callable[[Path, np.ndarray, str, Path], Check]


@dataclass
class Exported:
    path: Path
    format: str
    max_abs_diff: float
    tolerance: float
    batch_sizes: list[int]  # of the inputs compared: the input example's, then random ones
    run_id: str
    artifact: str  # runs:/RUN_ID/export/FILE
    inputs: str = "random inputs"  # what the random batches were made of
    matched: str = ""  # what else the check compared (a detector's boxes)


def export_model(model_uri: str, fmt: str, output: str = "export",
                 tracking: str | None = None) -> Exported:
    """Export ``model_uri`` (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``runs:/ID/PATH``)
    to ``output``/model.pt|.onnx, check it numerically and log it on the model's run."""
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
    path = Path(output).expanduser().resolve() / FORMATS[fmt]
    with tempfile.TemporaryDirectory() as folder:
        try:
            local = Path(mlflow.artifacts.download_artifacts(
                model_uri, dst_path=folder, tracking_uri=client.tracking_uri))
            model = Model.load(local)
        except (MlflowException, OSError) as exc:
            raise ConfigError(f"MODEL_URI: {model_uri}: "
                              f"{last_line(getattr(exc, 'message', str(exc)))}") from None
        example = model.load_input_example(str(local))
        exporter = task_exporter(client, model.run_id, folder) if model.run_id else None
        if example is None or not model.run_id or (
                exporter is None and not program_file(local).is_file()):
            raise ConfigError(f"MODEL_URI: {model_uri}: not a PyTorch model in MLflow's pt2 "
                              "format, nor one that its task exports, with an input example, "
                              "logged in a run (what raynas logs)")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            check = (exporter or export_program)(
                local, np.asarray(example, dtype=np.float32), fmt, path)
        except RaynasError:
            raise
        except Exception as exc:  # noqa: BLE001 - the exporters raise anything; one line for the CLI
            raise RaynasError(f"--format {fmt}: the export failed: "
                              f"{last_line(str(exc)) or type(exc).__name__}") from None
    if not check.max_abs_diff <= check.tolerance:
        raise RaynasError(f"--format {fmt}: {path} differs from the PyTorch model by up to "
                          f"{check.max_abs_diff:.3g} (tolerance {check.tolerance:.3g}); "
                          "not logged")
    client.log_artifact(model.run_id, str(path), "export")
    client.log_metric(model.run_id, f"export_{fmt}_max_abs_diff", check.max_abs_diff)
    artifact = f"runs:/{model.run_id}/export/{path.name}"
    client.set_tag(model.run_id, f"raynas.export.{fmt}", artifact)
    return Exported(path, fmt, check.max_abs_diff, check.tolerance, check.batch_sizes,
                    model.run_id, artifact, check.inputs, check.matched)


def task_exporter(client: MlflowClient, run_id: str, folder: str) -> Exporter | None:
    """The exporter of the task the model's run searched for (``Task.export``: the run's
    ``space.yaml`` names the model builder, which names its task); None where the task has
    none or the run no space (then the model must be MLflow's pt2 program)."""
    try:
        text = Path(client.download_artifacts(run_id, "space.yaml", folder)).read_text()
    except (MlflowException, OSError):
        return None
    space, _ = read_space(yaml.safe_load(text))
    return TASKS.find(builder_of(space).task).load("export")


def program_file(local: Path) -> Path:
    """Where MLflow keeps a model's ``torch.export`` program (its ``pt2`` format)."""
    data = Model.load(local).flavors.get("pytorch", {}).get("model_data", "data")
    return local / data / "model.pt2"


def tolerance(expected: list[np.ndarray]) -> float:
    """How far an export may be from the PyTorch model's outputs ``expected``."""
    return RTOL * max(1.0, max(float(np.abs(e).max()) for e in expected))


def export_program(local: Path, example: np.ndarray, fmt: str, path: Path) -> Check:
    """The core's exporter, of MLflow's pt2 program: traced to TorchScript, or given as it is
    to the dynamo ONNX exporter; compared on the example and on random batches."""
    program = torch.export.load(program_file(local))
    first = torch.as_tensor(example)
    generator = torch.Generator().manual_seed(0)
    inputs = [first] + [torch.randn(n, *first.shape[1:], generator=generator)
                        for n in RANDOM_BATCHES]
    run = _onnx(program, path) if fmt == "onnx" else _torchscript(program, first, path)
    reference = program.module()
    with torch.no_grad():
        expected = [reference(x).numpy() for x in inputs]
    got = [run(x) for x in inputs]
    diff = max(float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=True))
    return Check(diff, tolerance(expected), [len(x) for x in inputs])


def _torchscript(program, example, path: Path) -> Runner:
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
    import onnxruntime  # the `export` extra: only --format onnx needs it

    # external_data=False: one self-contained file (raynas models are far below ONNX's 2 GB).
    torch.onnx.export(program, f=str(path), dynamo=True, external_data=False, verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})[0]
