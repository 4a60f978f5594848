"""A search's own folder mirrored to S3 (moto's server), where ``--resume auto`` finds a search
(a path, or a bucket), and what a resume from the bucket's copy cleans up in MLflow. The whole
flow - a driver killed, a new one with an empty disk resuming from the bucket - is in
tests/deploy/test_cluster.py."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from raynas.config import Resources, SearchConfig, Tracking
from raynas.errors import ConfigError
from raynas.experiment import driver, state
from raynas.tracking.mirror import Mirror


@pytest.fixture
def on_s3(s3, monkeypatch, tmp_path):
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(state, "LEDGERS", tmp_path / "ledgers")
    return s3


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file()}


def a_search_folder(folder: Path) -> Path:
    (folder / "trial" / "t1").mkdir(parents=True)
    (folder / "raynas.json").write_text(json.dumps({"tune_path": "s3://raynas/r/exp"}))
    (folder / "mlflow-ledger.jsonl").write_text('{"op": "end", "key": "parent", "args": {}}\n')
    (folder / "mlflow-applied.json").write_text('{"applied": 1, "runs": {}}')
    (folder / "trial" / "t1" / "architecture.png").write_bytes(b"\x89PNG")
    return folder


def test_a_mirror_pushes_what_changed_and_pulls_it_back(on_s3, tmp_path):
    local = a_search_folder(tmp_path / "a")
    (local / ".mlflow-applied.json.tmp").write_text("{")  # a temporary file stays here
    remote = f"s3://{on_s3.bucket}/results/exp/raynas"
    mirror = Mirror.of(remote, local)
    assert mirror.push() == 4
    assert sorted(on_s3.keys("results/")) == [
        f"results/exp/raynas/{name}" for name in sorted(files(local)) if name[0] != "."]
    assert mirror.push() == 0  # nothing changed
    with open(local / "mlflow-ledger.jsonl", "a") as f:
        f.write('{"op": "end", "key": "trial/t1", "args": {}}\n{"op": "en')  # mid-append
    assert mirror.push() == 1
    ledger = on_s3.read("results/exp/raynas/mlflow-ledger.jsonl").decode()
    assert ledger.endswith('"trial/t1", "args": {}}\n')  # whole lines only
    # The tracker in Tune's tuner.pkl carries it: unpickled, it is this process' mirror.
    assert pickle.loads(pickle.dumps(mirror)) is mirror

    other = tmp_path / "b"
    (other / "stale").mkdir(parents=True)
    (other / "stale" / "old.json").write_text("{}")
    assert Mirror(remote, other).pull()
    expected = {**files(local), "mlflow-ledger.jsonl": ledger.encode()}
    assert files(other) == {k: v for k, v in expected.items() if k[0] != "."}
    assert not Mirror(f"s3://{on_s3.bucket}/results/none/raynas", tmp_path / "c").pull()


def test_resume_auto_finds_a_search_on_a_path_or_in_a_bucket(on_s3, tmp_path):
    path = str(tmp_path / "results")
    assert state.auto_folder(path, "exp") == (tmp_path / "results" / "exp").resolve()

    bucket = storage = f"s3://{on_s3.bucket}/auto"
    folder = state.auto_folder(bucket, "exp")
    assert folder.is_relative_to(tmp_path / "ledgers") and folder.name == "exp"
    assert state.auto_folder(f"{storage}2", "exp") != folder
    a_search_folder(folder)  # a search the bucket does not have: not resumed
    assert state.auto_folder(bucket, "exp") == folder and not folder.exists()

    pushed = a_search_folder(tmp_path / "elsewhere")  # what the first driver left
    Mirror(f"{storage}/exp/raynas", pushed).push()
    assert state.auto_folder(bucket, "exp") == folder
    assert files(folder) == files(pushed)


def test_a_missing_bucket_is_one_line_before_anything_runs(on_s3, tmp_path):
    config = SearchConfig(space="small_cnn", tracking=Tracking(
        storage="s3://no-such-bucket/results", resume="auto",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    with pytest.raises(ConfigError) as raised:
        driver.search(config, progress=lambda _: None)
    assert str(raised.value) == ("--storage: s3://no-such-bucket/results/small_cnn: there is "
                                 "no bucket 'no-such-bucket' (create it first)")
    assert not (tmp_path / "mlflow.db").exists()


def test_a_resume_deletes_runs_newer_than_its_ledger_and_notes_steps_logged_after_it(tracking,
                                                                                     tmp_path):
    from mlflow.tracking import MlflowClient

    from raynas.tracking.ledger import Ledger
    from raynas.tracking.tracker import SearchRecord

    client = MlflowClient(tracking)
    experiment_id = client.create_experiment("resumed")
    parent = client.create_run(experiment_id).info.run_id
    ledger = Ledger.open(tmp_path / "search", tracking, experiment_id)
    ledger.bind("parent", parent)
    ledger.write("create", "trial/a", name="trial-a", tags={"raynas.role": "trial"})
    ledger.write("metrics", "trial/a", metrics={"val_accuracy": 0.5}, step=1, time=1)
    assert ledger.flush(wait_s=30) == 0
    # What the previous driver wrote after the copy of the ledger this resume starts from:
    # trial a's next steps, and trial b's run.
    run_a = ledger.runs["trial/a"]
    client.log_metric(run_a, "val_accuracy", 0.6, step=2)
    client.log_metric(run_a, "val_accuracy", 0.7, step=3)
    run_b = client.create_run(experiment_id, tags={"raynas.key": "trial/b",
                                                   "mlflow.parentRunId": parent}).info.run_id
    lines: list[str] = []
    driver._forget_unknown_runs(SearchRecord(ledger, Mirror("s3://b/e/raynas", "x")),
                                    lines.append)
    assert client.get_run(run_b).info.lifecycle_stage == "deleted"
    assert client.get_run(run_a).info.lifecycle_stage == "active"
    assert ledger.last_step["trial/a"] == 3  # a resumed trial logs step 4 on, not 2 and 3 again
    assert lines == ["MLflow runs newer than the search's ledger (their trials run again): 1 "
                     "deleted"]


def test_extend_by_name_on_another_machine_takes_the_search_from_its_bucket(
        ray_local, tracking, on_s3, tmp_path):
    """A search that ran elsewhere (a cluster's driver) with its storage in a bucket: here,
    MLflow and the bucket are all there is; `raynas extend EXPERIMENT` finds it through the
    parent run's tags and goes on in the same run."""
    from mlflow.tracking import MlflowClient

    config = SearchConfig(space="small_cnn", strategy="random", scheduler="fifo", num_trials=2,
                          max_epochs=1, retrain_epochs=1, seed=1,
                          resources=Resources(concurrency=1),
                          tracking=Tracking(storage=f"s3://{on_s3.bucket}/far", experiment="far"))
    first = driver.search(config, progress=lambda _: None)
    shutil.rmtree(tmp_path / "ledgers")  # another machine: an empty disk
    extended = driver.extend("far", 1, progress=lambda _: None)
    assert extended.parent_run_id == first.parent_run_id and extended.num_trials == 3
    assert Path(extended.folder).is_relative_to(tmp_path / "ledgers")
    client = MlflowClient(tracking)
    trials = client.search_runs([client.get_experiment_by_name("far").experiment_id],
                                "tags.`raynas.role` = 'trial'")
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {first.parent_run_id}
    assert len(trials) == 3
    assert any(k.startswith(f"far/{Path(first.folder).name}-ext1/") for k in on_s3.keys("far/"))
