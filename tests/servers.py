"""`mlflow server` as the tests start it (browsing, an outage, a cluster's tracking server):
on 127.0.0.1 with a SQLite store, in a process group of its own so that uvicorn's worker goes
with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests


def healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=2).ok
    except requests.RequestException:
        return False


def start_mlflow(port: int, store: str, log: Path, artifacts: Path | None = None,
                 env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.Popen:
    """`mlflow server` on ``port`` over the ``store`` URI (and proxied ``artifacts``), its
    output in ``log``; returns once its /health answers."""
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
               str(port), "--workers", "1", "--backend-store-uri", store]
    if artifacts is not None:
        command += ["--artifacts-destination", str(artifacts)]
    with open(log, "a") as out:  # the child keeps its own copy of the descriptor
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                  env={"MLFLOW_DISABLE_TELEMETRY": "true",
                                       **(os.environ if env is None else env)},
                                  cwd=log.parent, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not healthy(f"http://127.0.0.1:{port}"):
        if server.poll() is not None or time.monotonic() > deadline:
            stop(server)
            raise AssertionError(f"mlflow server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.5)
    return server


def stop(server: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM to its process group, SIGKILL if it is not gone within ``grace`` seconds."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)
