"""Shared fixtures: one real local Ray instance per test session, a real MLflow store per test."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """A real Ray instance with 2 CPUs (the CI machine's size), shared by the session."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite MLflow store (and artifact folder) in the test's temp dir."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    # MLflow's fluent API keeps the URI an earlier test set (``mlflow.set_tracking_uri``).
    mlflow.set_tracking_uri(uri)
    return uri


@pytest.fixture(scope="session")
def tiny_search(ray_local, tmp_path_factory):
    """One real search (small_cnn, 4 random trials of 2 epochs) in its own SQLite MLflow store,
    shared by the tests that only read what it recorded (reports, browsing)."""
    from raynas.config import SearchConfig
    from raynas.experiment import search

    root = tmp_path_factory.mktemp("tiny_search")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the store's artifacts go to ./mlruns
        return search(SearchConfig(
            space="small_cnn", strategy="random", scheduler="fifo", num_trials=4, max_epochs=2,
            retrain_epochs=1, tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
            storage=str(root / "ray")))
