"""raynas: Neural Architecture Search orchestrated by Ray Tune, tracked in MLflow."""

from __future__ import annotations

import os
from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# raynas reads many small artifacts (space.yaml, architecture.json, budget.json): one MLflow
# progress bar each is noise on stderr, and in a table printed to stdout.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

#: The public API, imported lazily: ``import raynas`` stays fast (the CLI's error paths never
#: import Ray or torch).
_PUBLIC = {"SearchConfig": "raynas.config", "Resources": "raynas.config",
           "Tracking": "raynas.config", "Failures": "raynas.config", "Costs": "raynas.config",
           "load_dataset": "raynas.data",
           "load_space": "raynas.estimation", "resolve": "raynas.experiment.resolve",
           "search": "raynas.experiment.driver", "extend": "raynas.experiment.driver"}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(name)
    return getattr(import_module(_PUBLIC[name]), name)
