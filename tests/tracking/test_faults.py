"""Faults performed for real - a trial's worker killed, the tracking server stopped, two
searches writing one store - and then the MLflow record checked run by run. (A killed driver is
in tests/deploy/test_cluster.py: the RayJob entrypoint killed mid-search and run again.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from servers import start_mlflow, stop

from raynas.bench.scaling import free_ports
from raynas.config import SearchConfig, Tracking
from raynas.experiment.driver import search
from raynas.tracking.store import FAIL_FAST

# Searches with a tracking server killed, workers killed, drivers killed: all for real.
pytestmark = pytest.mark.e2e


def wait_for(condition: Callable[[], object], timeout: float = 240, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what or condition}")


def ledger_ops(results: Path) -> list[dict]:
    files = list(results.glob("*/mlflow-ledger.jsonl"))
    if not files:
        return []
    return [json.loads(line) for line in files[0].read_text().splitlines() if line.endswith("}")]


def ended_trials(results: Path) -> int:
    return sum(op["op"] == "end" and op["key"].startswith("trial/") for op in ledger_ops(results))


def search_runs(uri: str, experiment: str) -> dict[str, list]:
    """The experiment's runs by role (search, trial, final)."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], max_results=1000) if found else []
    by_role: dict[str, list] = {"search": [], "trial": [], "final": []}
    for run in runs:
        by_role[run.data.tags["raynas.role"]].append(run)
    return by_role


def assert_exact_record(uri: str, experiment: str, trials: int, epochs: int) -> dict:
    """One finished parent, every trial once with one metric point per epoch, one model."""
    client = MlflowClient(uri)
    runs = search_runs(uri, experiment)
    parent, = runs["search"]
    assert parent.info.status == "FINISHED"
    ids = [r.data.tags["raynas.trial_id"] for r in runs["trial"]]
    assert len(ids) == len(set(ids)) == trials
    for run in runs["trial"]:
        assert run.info.status == "FINISHED", run.data.tags
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert steps == list(range(1, epochs + 1))
    final, = runs["final"]
    assert final.data.tags["raynas.model_uri"].startswith("models:/")
    versions = client.search_model_versions(f"name = '{experiment}'")
    assert len(versions) == 1
    return {"parent": parent, "trials": runs["trial"]}


def trial_workers() -> list[int]:
    """The pids of Ray Tune trial workers (``ray::ImplicitFunc``) on this machine."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(b"ray::ImplicitFunc"):
                found.append(int(cmdline.parent.name))
        except OSError:  # the process ended meanwhile
            pass
    return found


def ancestors(pid: int) -> set[int]:
    """The pids above ``pid`` up to init (each process's parent, from /proc/PID/stat)."""
    found: set[int] = set()
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        found.add(pid)
    return found


def raynas(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "raynas.cli", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, env={**os.environ, **(env or {})}, **kwargs)


def test_a_killed_trial_worker_is_retried_from_its_checkpoint(ray_local, tracking, tmp_path):
    results = tmp_path / "results"
    config = SearchConfig(space="small_cnn", dataset="mnist5k", strategy="grid",
                          scheduler="fifo", num_trials=3, max_epochs=4, retrain_epochs=1,
                          tracking=Tracking(storage=str(results), experiment="t"))
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(result=search(config, lambda m: None)))
    thread.start()
    wait_for(lambda: any(op["op"] == "metrics" for op in ledger_ops(results)), what="epoch 1")
    workers = [pid for pid in trial_workers() if os.getpid() in ancestors(pid)]  # ours only:
    # another pytest-xdist worker runs its own Ray instance on this machine
    assert workers, "no trial worker process found"
    os.kill(workers[0], signal.SIGKILL)  # mid-trial
    thread.join(timeout=300)
    result = box["result"]
    assert (result.num_trials, result.num_failed) == (3, 0)
    record = assert_exact_record(tracking, "t", trials=3, epochs=4)
    retries = [int(r.data.tags.get("raynas.retries", 0)) for r in record["trials"]]
    assert sum(retries) >= 1


def mlflow_server(tmp_path: Path, port: int) -> subprocess.Popen:
    return start_mlflow(port, f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server.log",
                        artifacts=tmp_path / "artifacts")


def search_against_a_server(tmp_path: Path, experiment: str, *flags: str
                            ) -> tuple[int, str, Path, subprocess.Popen]:
    """A search tracked by a real ``mlflow server``, which is stopped once a trial has ended."""
    (port,) = free_ports(1)
    uri = f"http://127.0.0.1:{port}"
    server = mlflow_server(tmp_path, port)
    results = tmp_path / "results"
    driver = raynas("search", "--space", "small_cnn", "--dataset", "mnist5k", "--strategy",
                    "grid", "--scheduler", "fifo", "--num-trials", "3", "--max-epochs", "2",
                    "--retrain-epochs", "1", "--storage", str(results), "--tracking-uri", uri,
                    "--experiment", experiment, "--json", *flags, cwd=tmp_path)
    wait_for(lambda: ended_trials(results) >= 1 or driver.poll() is not None, what="a trial")
    stop(server)
    return port, uri, results, driver


def test_tracking_outage_queues_writes_durably_and_sync_flushes_them(tmp_path):
    port, uri, results, driver = search_against_a_server(tmp_path, "o", "--tracking-wait", "0")
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err[-3000:]
    assert "is unreachable" in err and "raynas sync" in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["model_uri"] == "pending"
    folder = Path(summary["folder"])
    applied = json.loads((folder / "mlflow-applied.json").read_text())["applied"]
    assert applied < len(ledger_ops(results))  # writes are waiting on disk

    server = mlflow_server(tmp_path, port)
    try:
        sync = subprocess.run([sys.executable, "-m", "raynas.cli", "sync", str(folder)],
                              capture_output=True, text=True, timeout=300)
        assert sync.returncode == 0, sync.stderr[-2000:]
        assert_exact_record(uri, "o", trials=3, epochs=2)
    finally:
        stop(server)


def test_writes_queued_during_an_outage_apply_by_themselves_once_the_server_is_back(
        tmp_path, monkeypatch):
    """While the server is away, each write waits in the ledger, in order; once the server
    answers again, the ledger's own thread applies them - no flush, no sync - and says so. (A
    whole search through an outage: the test above.)"""
    from raynas.tracking.ledger import Ledger

    for name, value in FAIL_FAST.items():  # as raynas.tracking.connect sets them
        monkeypatch.setenv(name, value)
    (port,) = free_ports(1)
    uri = f"http://127.0.0.1:{port}"
    server = mlflow_server(tmp_path, port)
    client = MlflowClient(uri)
    experiment = client.create_experiment("b")
    warnings: list[str] = []
    ledger = Ledger(tmp_path / "search", uri, experiment, warnings.append)
    ledger.bind("parent", client.create_run(experiment).info.run_id)
    stop(server)
    ledger.write("create", "trial/1", name="t1", tags={"raynas.role": "trial"})
    for step in (1, 2):
        ledger.write("metrics", "trial/1", metrics={"val_accuracy": step / 4}, step=step,
                     time=step)
    ledger.write("end", "trial/1", status="FINISHED")
    ledger.write("end", "parent", status="FINISHED")
    wait_for(lambda: warnings, what="the outage warning")
    assert "is unreachable" in warnings[0] and ledger.pending == 5
    server = mlflow_server(tmp_path, port)
    try:
        wait_for(lambda: ledger.pending == 0, timeout=150, what="the queued writes")
        assert warnings[-1].startswith("MLflow is back after")
        trial = client.get_run(ledger.runs["trial/1"])
        assert trial.info.status == "FINISHED" and trial.data.tags["raynas.role"] == "trial"
        assert [m.step for m in client.get_metric_history(trial.info.run_id,
                                                          "val_accuracy")] == [1, 2]
        assert client.get_run(ledger.runs["parent"]).info.status == "FINISHED"
        assert len(client.search_runs([experiment])) == 2
    finally:
        stop(server)


def test_two_searches_at_once_share_one_sqlite_store_without_mixing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    searches = [raynas("search", "--space", "small_cnn", "--strategy", "random", "--scheduler",
                       "fifo", "--num-trials", "3", "--max-epochs", "1", "--retrain-epochs", "1",
                       "--seed", str(seed), "--concurrency", "1", "--tracking-uri", uri,
                       "--experiment", "shared", "--storage", str(tmp_path / "results"),
                       "--json", cwd=tmp_path) for seed in (1, 2)]
    summaries = []
    for process in searches:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
        summaries.append(json.loads(out.strip().splitlines()[-1]))
    client = MlflowClient(uri)
    runs = search_runs(uri, "shared")
    assert len(runs["search"]) == 2 and len(runs["trial"]) == 6 and len(runs["final"]) == 2
    for summary in summaries:
        children = [r for r in runs["trial"]
                    if r.data.tags["mlflow.parentRunId"] == summary["parent_run_id"]]
        assert len(children) == 3
        assert all(len(client.get_metric_history(r.info.run_id, "val_accuracy")) == 1
                   for r in children)
    assert len(client.search_model_versions("name = 'shared'")) == 2


def test_a_write_the_store_refuses_is_skipped_alone_not_with_its_batch(tmp_path):
    """Consecutive params/metrics/tags writes on a run go to MLflow as one log_batch; when MLflow
    refuses the batch (here: a param name it does not accept), the others still land and only
    that write is skipped, with a warning naming it; so is a param changed later."""
    from raynas.tracking.ledger import Ledger

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("batch", artifact_location=(tmp_path / "a").as_uri())
    warnings: list[str] = []
    ledger = Ledger(tmp_path / "search", client.tracking_uri, experiment, warnings.append)
    ledger.bind("parent", client.create_run(experiment).info.run_id)
    ledger.write("create", "trial/1", name="t1", tags={"raynas.role": "trial"})
    ledger.write("params", "trial/1", params={"lr": "0.1"})
    ledger.write("metrics", "trial/1", metrics={"val_accuracy": 0.5}, step=1, time=1)
    ledger.write("params", "trial/1", params={"no!": "1"})  # not a valid param name
    ledger.write("params", "trial/1", params={"lr": "0.2"})  # MLflow keeps params immutable
    ledger.write("tags", "trial/1", tags={"raynas.depth": "3"})
    ledger.write("end", "trial/1", status="FINISHED")
    assert ledger.flush(wait_s=5) == 0
    run = client.get_run(ledger.runs["trial/1"])
    assert run.data.params == {"lr": "0.1"}
    assert run.data.metrics == {"val_accuracy": 0.5}
    assert run.data.tags["raynas.depth"] == "3" and run.info.status == "FINISHED"
    assert len(warnings) == 2, warnings
    assert all(w.startswith("MLflow refused params on trial/1") for w in warnings), warnings
