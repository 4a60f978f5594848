"""Exact trial budgets across resumes: the driver killed while Tune's upload of its state lagged.

Ray 2.60 writes the experiment state (the trials) and the search generator's counter to separate
files and copies them to the storage one after the other, so a killed driver can leave a storage
whose counter is older than its trials. That is reproduced here as it happens: the search runs,
its counter file in the storage is kept from an early checkpoint, the driver dies a few trials
later, and the storage's counter is put back to that early copy before the resume.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
from ray import cloudpickle, tune

from raynas.experiment.tuner import build_tuner, plan_search
from raynas.schedulers import SCHEDULERS
from raynas.space import read_space
from raynas.strategies import STRATEGIES
from raynas.strategies.base import StrategyContext

TRIALS = 8
# The trial function travels by value: Ray's workers cannot import a test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def trainable(config: dict) -> None:
    for step in range(1, 3):
        time.sleep(0.05)
        tune.report({"val_accuracy": len(str(config)) % 7 / 7, "budget": step})


class DriverDied(RuntimeError):
    pass


class Crash(tune.Callback):
    """Keeps the storage's counter file as it was after ``keep`` trials ended, and kills the
    search after ``kill``: an exception out of Tune's loop ends it as a dying driver would,
    without a last save of its state (Tune still stops the trials' actors, which a second
    Tuner in this process needs)."""

    def __init__(self, experiment: Path, stale: Path, keep: int, kill: int) -> None:
        self.experiment, self.stale, self.keep, self.kill = experiment, stale, keep, kill
        self.ended = 0

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self.ended += 1
        if self.ended >= self.keep and not self.stale.exists():
            copies = {f.name: f.read_bytes() for f in self.experiment.glob("search_gen_state-*")}
            try:  # Tune may be copying it to the storage right now: keep a whole one
                assert [cloudpickle.loads(data) for data in copies.values()]
            except Exception:  # noqa: BLE001 - a half-written pickle fails in many ways
                return
            self.stale.mkdir()
            for name, data in copies.items():
                (self.stale / name).write_bytes(data)

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        # (Tune catches what on_trial_complete raises.) Only once Tune's last copy of its state
        # to the storage is whole: one caught half-way stays cut (Tune's own files have no
        # previous copy), a damage this test is not about.
        if self.ended >= self.kill and whole_state(self.experiment) is not None:
            raise DriverDied("the driver dies")


def whole_state(experiment: Path) -> int | None:
    """The number of trials in the storage's newest experiment state; None while it is
    missing or half written (Tune copies it in the background)."""
    try:
        state = max(experiment.glob("experiment_state-*.json"))
        return len(json.loads(state.read_text())["trial_data"])
    except ValueError:
        return None


def tuner(storage: Path, callbacks=()) -> tune.Tuner:
    space, _ = read_space("small_cnn")
    ctx = StrategyContext(space, "val_accuracy", "max", 0, TRIALS, 2)
    plan, scheduler = plan_search(STRATEGIES["random"], SCHEDULERS["fifo"], ctx)
    return build_tuner(trainable, plan, scheduler, metric="val_accuracy", mode="max",
                       storage=str(storage), name="budget", callbacks=callbacks)


def test_a_resume_from_a_storage_whose_counter_lags_its_trials_runs_the_budget_exactly(
        ray_local, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "0")  # Tune saves its state at every step
    experiment, stale = tmp_path / "ray" / "budget", tmp_path / "stale"
    with pytest.raises(Exception, match="the driver dies"):
        tuner(tmp_path / "ray", [Crash(experiment, stale, keep=2, kill=5)]).fit()
    trials = whole_state(experiment)
    # The upload lagged: the storage holds the trials of the last checkpoint, the counter of
    # an early one.
    for file in experiment.glob("search_gen_state-*"):
        file.unlink()
    for file in stale.iterdir():
        shutil.copy(file, experiment / file.name)
    (counter,) = [cloudpickle.loads(f.read_bytes())["counter"] for f in stale.iterdir()]
    assert counter < trials < TRIALS  # the case: more trials than the counter says
    assert tune.Tuner.can_restore(str(experiment))
    restored = tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True,
                                  resume_errored=False)
    results = restored.fit()
    assert len(results) == TRIALS  # without TrialBudget: the resume hangs (stale limiter)
    assert all(r.error is None for r in results)
    assert len({r.metrics["trial_id"] for r in results}) == TRIALS
