"""Every MLflow write of a search, durable and in order, so a tracking outage loses nothing.

MLflow's client writes synchronously and raises when the store is away; Tune's MLflow callback
then drops the write. Here each write is appended to ``mlflow-ledger.jsonl`` (next to the Tune
results) before it is tried, and ``mlflow-applied.json`` says how far the store has it. A write
that fails because the store is unreachable or busy stays pending and is retried in order, with
backoff, at the next write, at the end of the search, on ``--resume`` and by ``raynas sync``.

Writes name runs by a key (``parent``, ``trial/<id>``, ``final``); a run created while the
server was down gets its MLflow id when the create is applied, and the writes behind it wait.
Replays are idempotent, so a write that reached the store just before a crash is not doubled: a
run is looked up by its ``raynas.key`` tag before it is created again, metrics keep their original
timestamp (the SQL stores ignore an identical metric), tags, params and terminations are
idempotent by nature.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import sqlalchemy.exc
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from raynas.report.trial import render
from raynas.runtime import stderr
from raynas.tracking.files import read_json, write_atomic
from raynas.tracking.final_model import log_model_files

LEDGER, APPLIED = "mlflow-ledger.jsonl", "mlflow-applied.json"
MAX_BATCH = 100  # MLflow's log_batch limit on params (and on tags) per call
MAX_METRICS = 1000  # ... and on metrics, and on all three together
BATCHED = ("params", "metrics", "tags")  # consecutive writes of these on a run: one log_batch
BACKOFF_S = (1.0, 60.0)  # first and longest wait before retrying an unreachable store
WAITING_RETRY_S = 5.0  # ... and the longest while someone waits on a flush (a search's end)
# Errors that mean "not now" rather than "never": the write stays pending.
TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED",
                   "DEADLINE_EXCEEDED", "ENDPOINT_NOT_FOUND"}

_OPEN: dict[Path, Ledger] = {}  # one ledger per folder and process: see ``__reduce__``


def _transient(exc: Exception) -> bool:
    if isinstance(exc, MlflowException):
        return exc.error_code in TRANSIENT_CODES or "database is locked" in str(exc)
    return isinstance(exc, OSError | requests.RequestException | sqlalchemy.exc.OperationalError)


class Ledger:
    """The write queue of one search (see the module docstring)."""

    @classmethod
    def open(cls, directory: str | Path, tracking_uri: str, experiment_id: str,
             warn: Callable[[str], None] | None = None) -> Ledger:
        """The ledger in ``directory``, loaded from disk; the same object on every call in one
        process, so the tracker a restored Tuner unpickles writes through the live ledger."""
        folder = Path(directory).resolve()
        if folder not in _OPEN:
            _OPEN[folder] = cls(folder, tracking_uri, experiment_id, warn or stderr)
        return _OPEN[folder]

    def __init__(self, folder: Path, tracking_uri: str, experiment_id: str,
                 warn: Callable[[str], None]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.tracking_uri, self.experiment_id = folder, tracking_uri, experiment_id
        self.client = MlflowClient(tracking_uri)
        self.warn = warn
        self.ops: list[dict[str, Any]] = []
        if (folder / LEDGER).exists():
            self.ops = _read_ops(folder / LEDGER)
        state = read_json(folder / APPLIED, warn) or {}
        self.applied: int = state.get("applied", 0)
        if self.applied > len(self.ops):  # the ledger lost its end (a damaged disk or copy)
            warn(f"warning: {folder / LEDGER} ends {self.applied - len(self.ops)} writes short "
                 "of what MLflow was given; those writes are in MLflow, not replayed")
            self.applied = len(self.ops)
        self.runs: dict[str, str] = state.get("runs", {})  # key -> MLflow run id
        self.outputs: dict[str, Any] = state.get("outputs", {})  # e.g. the final model's URI
        # Writes an earlier process recorded: any of them may have reached the store already
        # (the applied count is saved after each write; a mirrored ledger can be older still).
        self.replayed = len(self.ops)
        self.uncertain = self.pending > 0
        self.retry_at, self.delay, self.down_since = 0.0, BACKOFF_S[0], None
        # What was written, per run key (applied or not): the tracker's memory across resumes.
        self.last_step: dict[str, int] = {}
        self.tags: dict[str, dict[str, str]] = {}
        self.status: dict[str, str] = {}
        # Trials this process saw start, and those still running (not persisted): after Tune
        # returns, a running one means the search was interrupted.
        self.seen: set[str] = set()
        self.live: set[str] = set()
        self._lock = threading.RLock()  # one applier at a time: the background one or flush()
        self._wake = threading.Event()
        self._applier: threading.Thread | None = None
        self._one_by_one = 0  # up to this op, apply singly: a batch of them was refused
        for op in self.ops:
            self._index(op)

    def __reduce__(self):
        return _reopen, (str(self.folder), self.tracking_uri, self.experiment_id)

    @property
    def pending(self) -> int:
        return len(self.ops) - self.applied

    def has(self, key: str) -> bool:
        """Whether a run with this key was created (or its creation is pending)."""
        return key in self.runs or any(op["op"] == "create" and op["key"] == key
                                       for op in self.ops[self.applied :])

    def lost(self, known: set[str]) -> list[str]:
        """Trial runs created, not deleted, that neither Tune's results (``known``) nor this
        process saw: they started - or even ended - after the Tune state a resume began from
        was saved (a killed driver; with a remote storage, Tune's upload of its state can lag
        the ledger's copy). (Seen counts too: after a PBT exploit a trial's last result can
        carry the id of the trial it cloned.)"""
        created = {op["key"] for op in self.ops
                   if op["op"] == "create" and op["key"].startswith("trial/")}
        deleted = {op["key"] for op in self.ops if op["op"] == "delete"}
        return sorted(created - deleted - known - self.seen)

    def bind(self, key: str, run_id: str) -> None:
        """A run created outside the ledger (the parent, created while the store must be up)."""
        with self._lock:
            self.runs[key] = run_id
            self._save()

    def write(self, op: str, key: str, **args: Any) -> None:
        """Record one write durably; a background thread applies it (in order) soon after.

        Applying inline would put every MLflow round trip on Tune's event loop, between one
        trial's report and the next trial's start: that was most of raynas' per-trial overhead.
        """
        entry = {"op": op, "key": key, "args": args}
        with open(self.folder / LEDGER, "a") as f:
            f.write(json.dumps(entry, default=str) + "\n")
        self.ops.append(entry)
        self._index(entry)
        self._wake.set()
        if self._applier is None or not self._applier.is_alive():
            self._applier = threading.Thread(target=self._apply_in_background, daemon=True,
                                             name=f"raynas-ledger-{self.folder.name}")
            self._applier.start()

    def _apply_in_background(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self.flush():  # the store is away: try again when the backoff says
                time.sleep(max(0.05, self.retry_at - time.monotonic()))
                self._wake.set()

    def flush(self, wait_s: float = 0.0) -> int:
        """Apply pending writes in order, for up to ``wait_s`` while the store is unreachable;
        returns how many are still pending."""
        with self._lock:
            return self._flush(wait_s)

    def _flush(self, wait_s: float) -> int:
        deadline = time.monotonic() + wait_s
        while self.pending:
            pause = self.retry_at - time.monotonic()
            if wait_s:  # someone waits for this flush: retry often, not on the search's backoff
                pause = min(pause, WAITING_RETRY_S)
            if pause > 0:
                if time.monotonic() + pause > deadline:
                    break
                time.sleep(pause)
            entries = self._batch()
            try:
                if len(entries) > 1:
                    self._apply_batch(entries)
                else:
                    self._apply(entries[0])
            except Exception as exc:  # noqa: BLE001 - classified right below
                if _transient(exc):
                    self._unreachable(exc)
                    continue
                if len(entries) > 1:  # skip only the write it refuses: go one by one
                    self._one_by_one = self.applied + len(entries)
                    continue
                entry = entries[0]
                self.warn(f"MLflow refused {entry['op']} on {entry['key']} (skipped): "
                          f"{str(exc).splitlines()[0][:300]}")
            self._advance(len(entries))
        return self.pending

    def _batch(self) -> list[dict[str, Any]]:
        """The next pending write and the params/metrics/tags writes on the same run right
        after it, within one ``log_batch``'s limits: one round trip instead of several (a
        trial's start is 2-3 of them, each of its steps 1-3)."""
        first = self.ops[self.applied]
        if first["op"] not in BATCHED or self.applied < self._one_by_one:
            return [first]
        entries, counts = [], {"params": 0, "metrics": 0, "tags": 0}
        params: set[str] = set()  # a param set twice is refused by MLflow: not in one batch
        for entry in self.ops[self.applied :]:
            if entry["op"] not in BATCHED or entry["key"] != first["key"] or (
                    entry["op"] == "params" and params & entry["args"]["params"].keys()):
                break
            if entry["op"] == "params":
                params |= entry["args"]["params"].keys()
            counts[entry["op"]] += len(entry["args"][entry["op"]])
            if (entries and (max(counts["params"], counts["tags"]) > MAX_BATCH
                             or sum(counts.values()) > MAX_METRICS)):
                break
            entries.append(entry)
        return entries

    # ------------------------------------------------------------------------------ internals
    def _index(self, entry: dict[str, Any]) -> None:
        key, args = entry["key"], entry["args"]
        if entry["op"] == "metrics":
            self.last_step[key] = max(self.last_step.get(key, 0), args["step"])
        elif entry["op"] == "tags":
            self.tags.setdefault(key, {}).update(args["tags"])
        elif entry["op"] == "end":
            self.status[key] = args["status"]
        elif entry["op"] == "reopen":
            self.status[key] = "RUNNING"

    def _unreachable(self, exc: Exception) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.warn(f"MLflow at {self.tracking_uri} is unreachable "
                      f"({type(exc).__name__}); the search goes on, {self.pending} writes are "
                      f"kept in {self.folder / LEDGER} and retried (or: raynas sync "
                      f"{self.folder})")
        self.uncertain = True
        self.retry_at = time.monotonic() + self.delay
        self.delay = min(self.delay * 2, BACKOFF_S[1])

    def _advance(self, count: int = 1) -> None:
        self.applied += count
        self.uncertain = False
        self.delay = BACKOFF_S[0]
        if self.down_since is not None and not self.pending:
            self.warn(f"MLflow is back after {time.monotonic() - self.down_since:.0f} s: "
                      "every pending write is in")
            self.down_since = None
        self._save()

    def _save(self) -> None:
        state = {"applied": self.applied, "runs": self.runs, "outputs": self.outputs}
        write_atomic(self.folder / APPLIED, json.dumps(state))

    def _apply(self, entry: dict[str, Any]) -> None:
        op, key, args = entry["op"], entry["key"], entry["args"]
        if op == "create":
            maybe_done = self.uncertain or self.applied < self.replayed
            self.runs[key] = (maybe_done and self._find(key)) or self.client.create_run(
                self.experiment_id, run_name=args["name"],
                tags={**args["tags"], "raynas.key": key,
                      "mlflow.parentRunId": self.runs["parent"]}).info.run_id
            return
        run_id = self.runs[key]
        if op in BATCHED:
            self._apply_batch([entry])
        elif op == "diagram":  # drawn here, off Tune's event loop (see ``report.trial``)
            path = self.folder / args["file"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(render(args["model"], args["arch"], args["title"], args["file"]))
            self.client.log_artifact(run_id, str(path))
        elif op == "dict":
            self.client.log_dict(run_id, args["data"], args["file"])
        elif op == "text":
            self.client.log_text(run_id, args["text"], args["file"])
        elif op == "artifact":
            self.client.log_artifact(run_id, str(self.folder / args["file"]))
        elif op == "end":
            self.client.set_terminated(run_id, args["status"])
        elif op == "delete":
            self.client.delete_run(run_id)
        elif op == "reopen":  # a resumed search: its run is running again
            self.client.update_run(run_id, status="RUNNING")
        elif op == "model":
            self.outputs[f"{key}:model_uri"] = log_model_files(self.client, run_id, self.folder,
                                                               args)
        elif op == "alias":  # a registered model alias on the version this run's model got
            name, _, version = self.outputs[f"{key}:model_uri"].removeprefix(
                "models:/").rpartition("/")
            self.client.set_registered_model_alias(name, args["alias"], version)
        else:
            raise ValueError(f"unknown ledger op {op!r}")

    def _apply_batch(self, entries: list[dict[str, Any]]) -> None:
        """params/metrics/tags writes on one run (see ``_batch``), in as few calls as the
        limits allow: one, unless a single write has more than ``MAX_BATCH`` params or tags."""
        params: dict[str, str] = {}
        tags: dict[str, str] = {}
        metrics: list[Metric] = []
        for entry in entries:
            args = entry["args"]
            if entry["op"] == "params":
                params.update(args["params"])
            elif entry["op"] == "tags":
                tags.update(args["tags"])
            else:
                metrics += [Metric(k, float(v), args["time"], args["step"])
                            for k, v in args["metrics"].items()]
        run_id = self.runs[entries[0]["key"]]
        params_ = [Param(k, str(v)) for k, v in params.items()]
        tags_ = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(max(1, math.ceil(max(len(params_), len(tags_)) / MAX_BATCH))):
            part = slice(i * MAX_BATCH, (i + 1) * MAX_BATCH)
            self.client.log_batch(run_id, params=params_[part], tags=tags_[part],
                                  metrics=metrics if i == 0 else [])

    def _find(self, key: str) -> str | None:
        """The run a create that may have reached the store made, if it did."""
        runs = self.client.search_runs(
            [self.experiment_id], f"tags.`raynas.key` = '{key}' and "
            f"tags.mlflow.parentRunId = '{self.runs['parent']}'", max_results=1)
        return runs[0].info.run_id if runs else None


def _read_ops(path: Path) -> list[dict[str, Any]]:
    """The ledger's writes, up to the first line that does not parse: a crash mid-append
    leaves a torn last line (that write never happened), a truncated copy a torn line too."""
    ops = []
    for line in path.read_bytes().splitlines():
        try:
            op = json.loads(line)
        except ValueError:
            break
        if not isinstance(op, dict) or not {"op", "key", "args"} <= op.keys():
            break
        ops.append(op)
    return ops


def _reopen(folder: str, tracking_uri: str, experiment_id: str) -> Ledger:
    """Unpickling a ledger gives the live one (a plain function: bound classmethods do not
    survive cloudpickle's by-value path)."""
    return Ledger.open(folder, tracking_uri, experiment_id)
