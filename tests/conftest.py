"""Shared fixtures: one real local Ray instance per test session, a real MLflow store per test,
an S3 server per test module that asks for one."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Fixtures that mean a test runs something for real: a Ray instance, a cluster, a server.
E2E_FIXTURES = {"ray_local", "tiny_search", "s3", "on_s3", "mlflow_server", "mlflow_ui", "cluster",
                "table_csv"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    import torch

    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)


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


@pytest.fixture(autouse=True)
def results_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Searches that name no --storage keep Tune's results in the test's temp dir, not in
    ~/ray_results (where they would pile up run after run)."""
    monkeypatch.setenv("RAYNAS_STORAGE", str(tmp_path / "ray_results"))


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
    from raynas.config import SearchConfig, Tracking
    from raynas.experiment.driver import search

    root = tmp_path_factory.mktemp("tiny_search")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the store's artifacts go to ./mlruns
        return search(SearchConfig(
            space="small_cnn", strategy="random", scheduler="fifo", num_trials=4, max_epochs=2,
            retrain_epochs=1, tracking=Tracking(tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                                                storage=str(root / "ray"))))


@dataclass
class S3:
    """An S3-compatible server (moto's) with one bucket."""

    endpoint: str
    bucket: str
    env: dict[str, str]  # what a process (pyarrow, Ray Tune, boto3) needs to use it

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                         Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def read(self, key: str) -> bytes | None:
        try:
            return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client().exceptions.NoSuchKey:
            return None


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    """moto's S3 server on a free port, in this process, with the bucket ``raynas``. Processes
    reach it through ``S3.env``: pyarrow (so Tune's ``s3://`` storage) honours
    AWS_ENDPOINT_URL."""
    import moto.s3.responses
    from moto.server import ThreadedMotoServer

    from raynas.bench.scaling import free_ports

    # moto 5.2.1 names CompleteMultipartUpload's answer ...Response instead of ...Result; the AWS
    # SDK in pyarrow takes that for an error and every upload fails (getmoto/moto#10055, fixed
    # in later versions, where this changes nothing).
    post = moto.s3.responses.S3Response._key_response_post
    if not getattr(post, "raynas_fixed", False):
        def fixed(self, *args, **kwargs):
            status, headers, body = post(self, *args, **kwargs)
            wrong, right = "CompleteMultipartUploadResponse", "CompleteMultipartUploadResult"
            if isinstance(body, bytes):
                body = body.replace(wrong.encode(), right.encode())
            elif isinstance(body, str):
                body = body.replace(wrong, right)
            return status, headers, body

        fixed.raynas_fixed = True
        moto.s3.responses.S3Response._key_response_post = fixed
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    (port,) = free_ports(1)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    found = S3(endpoint, "raynas", {
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"})
    import requests

    # moto keeps its buckets in this process, not in the server: start from none
    requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
    try:
        found.client().create_bucket(Bucket=found.bucket)
        yield found
    finally:
        server.stop()
