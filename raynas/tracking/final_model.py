"""The final model: saved as an MLflow PyTorch model with its architecture, then registered."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

import raynas


def save_final_model(folder: Path, model, example, stem: str = "final") -> dict[str, str]:
    """Keep the retrained model next to the ledger until MLflow has it (see ``Ledger``)."""
    files = {"model": f"{stem}_model.pt", "example": f"{stem}_example.npy"}
    torch.save(model, folder / files["model"])
    np.save(folder / files["example"], example)
    return files


def log_model_files(client: MlflowClient, run_id: str, folder: Path, args: dict) -> str:
    """Log the retrained model (signature, input example, architecture, space) in ``run_id`` and
    register it under ``args["name"]``; returns its ``models:/name/version`` URI."""
    model = torch.load(folder / args["model"], weights_only=False)
    example = np.load(folder / args["example"])
    with torch.no_grad():
        output = model(torch.as_tensor(example)).numpy()
    # log_model exists only in MLflow's fluent API, whose tracking URI is process-wide and is
    # copied to $MLFLOW_TRACKING_URI (inherited by every later subprocess): set it for this
    # block only.
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        with mlflow.start_run(run_id=run_id):
            mlflow.log_dict(args["arch"], "architecture.json")
            mlflow.log_text(args["space_yaml"], "space.yaml")
            mlflow.log_metrics(args["metrics"])
            # Requirements given, not inferred: MLflow infers them by loading the model in a
            # subprocess (~10 s of a search's end), and misses raynas, whose classes it needs.
            # MLflow saves a torch.export program, unless the model says that torch.export
            # cannot capture it (a detector: NMS has data-dependent shapes), then a pickle.
            info = mlflow.pytorch.log_model(
                model, name="model", signature=infer_signature(example, output),
                serialization_format=getattr(model, "serialization_format", "pt2"),
                input_example=example, registered_model_name=args["name"],
                pip_requirements=[*mlflow.pytorch.get_default_pip_requirements(),
                                  f"raynas=={raynas.__version__}"])
    finally:
        mlflow.set_tracking_uri(before)
    uri = f"models:/{args['name']}/{info.registered_model_version}"
    client.set_tag(run_id, "raynas.model_uri", uri)
    return uri
