"""The MLflow store a search writes to: its URI, a fail-fast client, and small helpers for what is
written."""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

import requests
from mlflow.tracking import MlflowClient

import raynas
from raynas.errors import ConfigError


def tracking_uri(explicit: str | None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``./mlflow.db`` (MLflow's default)."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{Path('mlflow.db').resolve()}"


# MLflow retries a refused request 7 times with exponential backoff (minutes); the ledger
# retries on its own schedule, so a write fails fast while the server is away.
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def connect(uri: str) -> MlflowClient:
    """A client for ``uri``; a one-line ConfigError if the store cannot be reached."""
    if not any(uri.startswith(p) for p in ("sqlite:///", "http://", "https://", "file:",
                                          "postgresql", "mysql", "databricks")) and "://" in uri:
        raise ConfigError(f"--tracking-uri: unsupported scheme in {uri!r}")
    if uri.startswith(("http://", "https://")):
        for name, value in FAIL_FAST.items():
            os.environ.setdefault(name, value)

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
        except requests.RequestException as exc:
            raise ConfigError(f"--tracking-uri: MLflow server {uri} is not reachable "
                              f"({type(exc).__name__})") from None
    if not uri.startswith("sqlite:///"):
        return MlflowClient(tracking_uri=uri)
    # The client creates a new SQLite store (schema migrations) when it is made; two searches
    # starting at once on one file would race there, so that is serialised by a file lock.
    path = Path(uri.removeprefix("sqlite:///"))
    if not path.parent.is_dir():
        raise ConfigError(f"--tracking-uri: {uri}: folder {path.parent} does not exist")
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return MlflowClient(tracking_uri=uri)


def ui_command(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri}"


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(raynas.__file__).parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def last_line(traceback: str) -> str:
    """The last non-empty line of a traceback: ``ExceptionType: message``."""
    lines = [line.strip() for line in traceback.splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def trial_error(trial) -> str:
    """A failed trial's error, from its local error file: ``Trial.get_error`` reads the storage
    copy, which is only synced after the callbacks have run."""
    path = trial.error_file
    return last_line(Path(path).read_text() if path and Path(path).exists() else "")
