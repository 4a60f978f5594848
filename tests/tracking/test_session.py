"""`tracking_session`: how a use case's runs end in MLflow, whatever ends the block, and how
long its end waits for a store that is away."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from raynas.errors import SearchInterrupted
from raynas.tracking.ledger import Ledger
from raynas.tracking.session import tracking_session
from raynas.tracking.store import FAIL_FAST, connect
from raynas.tracking.tracker import SearchRecord


class Mirror:
    """Counts the pushes a real ``raynas.tracking.mirror.Mirror`` would make."""

    def __init__(self) -> None:
        self.pushes = 0

    def push(self, progress) -> None:
        self.pushes += 1


def a_search(uri: str, folder: Path) -> SearchRecord:
    record = SearchRecord.start(connect(uri), "session", folder, tags={"raynas.role": "search"},
                                params={}, space_yaml="name: x\n", warn=print)
    record.mirror = Mirror()
    return record


@pytest.mark.parametrize(("error", "status"), [
    (None, "FINISHED"), (SearchInterrupted, "KILLED"), (ValueError, "FAILED"),
    (KeyboardInterrupt, "FAILED")])
def test_the_parent_run_ends_as_the_block_ended_and_the_folder_is_pushed(tracking, tmp_path,
                                                                          error, status):
    record = a_search(tracking, tmp_path / "search")
    with (pytest.raises(error) if error else contextlib.nullcontext(),
          tracking_session(record, progress=print) as inside):
        assert inside is record
        record.child("trial/1", "trial-1", {"raynas.role": "trial"})
        if error:
            raise error("the block's end")
    client = MlflowClient(tracking)
    assert record.ledger.pending == 0  # applied before the block's end went on
    assert client.get_run(record.run_id).info.status == status
    # only the runs it was given: a trial's run is the tracker's to end
    assert client.get_run(record.ledger.runs["trial/1"]).info.status == "RUNNING"
    assert record.mirror.pushes == 1


def test_runs_ended_in_the_block_keep_their_status_and_runs_never_created_are_not_ended(
        tracking, tmp_path):
    record = a_search(tracking, tmp_path / "retrain")
    record.child("retrain/1", "one", {})
    record.child("retrain/2", "two", {})
    warnings: list[str] = []
    with pytest.raises(RuntimeError), tracking_session(
            record, ["retrain/1", "retrain/2", "retrain/3"], progress=warnings.append):
        record.end("retrain/1")
        raise RuntimeError("the second training failed")
    client = MlflowClient(tracking)
    assert client.get_run(record.ledger.runs["retrain/1"]).info.status == "FINISHED"
    assert client.get_run(record.ledger.runs["retrain/2"]).info.status == "FAILED"
    assert not record.ledger.has("retrain/3")
    assert client.get_run(record.run_id).info.status == "RUNNING"  # not one of its runs
    assert not warnings  # nothing waits: no "MLflow is unreachable" line


def unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SearchRecord:
    """A record whose store refuses every connection (nothing listens on port 9)."""
    for name, value in FAIL_FAST.items():  # as raynas.tracking.store.connect sets them
        monkeypatch.setenv(name, value)
    ledger = Ledger(tmp_path / "away", "http://127.0.0.1:9", "1", lambda _: None)
    ledger.bind("parent", "0123")
    return SearchRecord(ledger)


def test_a_failed_block_does_not_wait_for_an_unreachable_store(tmp_path, monkeypatch):
    record = unreachable(tmp_path, monkeypatch)
    warnings: list[str] = []
    started = time.monotonic()
    with pytest.raises(SearchInterrupted), tracking_session(record, wait_s=60,
                                                            progress=warnings.append):
        raise SearchInterrupted("Ctrl-C")
    assert time.monotonic() - started < 10
    assert record.ledger.ops[-1] == {"op": "end", "key": "parent", "args": {"status": "KILLED"}}
    [warning] = warnings
    assert warning.startswith("warning: MLflow is unreachable; 1 writes wait")
    assert warning.endswith(f"run raynas sync {record.ledger.folder}")


def test_the_end_of_a_use_case_waits_once_for_an_unreachable_store(tmp_path, monkeypatch):
    record = unreachable(tmp_path, monkeypatch)
    record.log_metrics("parent", {"val_accuracy": 0.5}, 1)
    started = time.monotonic()
    assert record.settle(wait_s=2) == 1  # waited, in vain
    waited = time.monotonic() - started
    assert waited >= 1
    started = time.monotonic()
    with tracking_session(record, wait_s=60, progress=lambda _: None):
        pass
    assert time.monotonic() - started < waited  # the session's end did not wait again
    assert record.ledger.pending == 2  # the metrics and the parent's end, for raynas sync
