"""A search folder damaged between two drivers: each file raynas resumes from, truncated at any
offset, and the second driver resumes as ``raynas search --resume`` does, against a real MLflow
store. Whatever was cut, MLflow ends with each trial once and each of its steps once."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from raynas.errors import ConfigError
from raynas.experiment.driver import _forget_unknown_runs
from raynas.experiment.state import SearchState
from raynas.tracking import ledger as ledgers
from raynas.tracking.files import previous, read_json, write_atomic
from raynas.tracking.ledger import APPLIED, LEDGER
from raynas.tracking.mirror import STATE
from raynas.tracking.tracker import SearchRecord

FILES = (STATE, APPLIED, LEDGER)
STEPS = {"trial/a": 3, "trial/b": 4}  # b ran to step 3 with the first driver, 4 with the second


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for every example (creating its schema takes seconds)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    return uri


def first_driver(folder: Path, store: str) -> tuple[str, str]:
    """Two trials of three steps, one of them ended, every write in MLflow; raynas.json
    written twice (so it has a previous copy)."""
    client = MlflowClient(store)
    experiment = client.create_experiment(uuid.uuid4().hex)
    record = SearchRecord.open(folder, store, experiment, print)
    record.ledger.bind("parent", client.create_run(experiment).info.run_id)
    state = SearchState(str(folder), store, experiment, config={}, tune_path=str(folder))
    state.save()
    for key in STEPS:
        record.child(key, key, {"raynas.role": "trial"})
        for step in (1, 2, 3):
            record.log_metrics(key, {"val_accuracy": step / 10}, step)
    record.end("trial/a", "FINISHED")
    state.scalarizer = {"ranges": {}}
    state.save()
    assert record.ledger.flush(wait_s=10) == 0
    return experiment, record.run_id


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(file=st.sampled_from(FILES), cut=st.floats(0, 1, exclude_max=True))
def test_a_resume_from_a_truncated_file_counts_nothing_twice_in_mlflow(
        store, tmp_path_factory, file, cut):
    folder = tmp_path_factory.mktemp("search").resolve()
    experiment, parent = first_driver(folder, store)
    ledgers._OPEN.pop(folder)  # the second driver is another process
    data = (folder / file).read_bytes()
    (folder / file).write_bytes(data[: int(len(data) * cut)])

    warnings: list[str] = []
    state = SearchState.read(str(folder))
    assert state.experiment_id == experiment
    record = SearchRecord.open(state.folder, state.tracking_uri, experiment, warnings.append)
    _forget_unknown_runs(record, warnings.append)
    record.ledger.write("reopen", "parent")
    # trial b goes on from its checkpoint at step 2, as the tracker reports it
    record.child("trial/b", "trial/b", {"raynas.role": "trial"})
    for step in (3, 4):
        if step > record.ledger.last_step.get("trial/b", 0):
            record.log_metrics("trial/b", {"val_accuracy": step / 10}, step)
    assert record.ledger.flush(wait_s=10) == 0

    client = MlflowClient(store)
    runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'",
                              run_view_type=ViewType.ACTIVE_ONLY)
    assert sorted(r.data.tags["raynas.key"] for r in runs) == sorted(STEPS)
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert sorted(steps) == list(range(1, STEPS[run.data.tags["raynas.key"]] + 1))
    damaged = file == APPLIED and not _parses(data[: int(len(data) * cut)])
    assert any(APPLIED in w and "previous copy" in w for w in warnings) == damaged
    ledgers._OPEN.pop(folder)


def _parses(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def test_a_damaged_file_without_a_good_previous_copy_is_one_line(tmp_path):
    path = tmp_path / STATE
    write_atomic(path, json.dumps({"n": 1}))
    assert not previous(path).exists()
    write_atomic(path, json.dumps({"n": 2}))
    assert json.loads(previous(path).read_text()) == {"n": 1}
    assert read_json(path, print) == {"n": 2}
    path.write_text('{"n": ')
    said: list[str] = []
    assert read_json(path, said.append) == {"n": 1}
    assert said == [f"warning: {path} is damaged: Expecting value: line 1 column 7 (char 6); "
                    f"resuming from its previous copy ({STATE}{'.prev'}): its last change "
                    "is lost"]
    previous(path).write_text("")
    with pytest.raises(ConfigError) as error:
        read_json(path, print)
    assert str(error.value) == (f"{path}: damaged: Expecting value: line 1 column 7 (char 6), "
                                f"and so is its previous copy {STATE}.prev")
    assert read_json(tmp_path / "nothing.json", print) is None
