"""--time-budget's plan (the data share, the cap, rungs in seconds), the retraining that never
starts an epoch it cannot finish, and the rule that stops a trial that learns nothing."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from searches import child_runs

from raynas.config import SearchConfig
from raynas.data import load_dataset
from raynas.estimation import load_space
from raynas.estimation.costs import EPOCH_S, CostSettings, measure
from raynas.estimation.problem import Chance, label_chance
from raynas.estimation.train import Run, TooSlow
from raynas.experiment.budget import (
    PLAN_MIN_S,
    Budget,
    apply_plan,
    epochs_per_trial,
    make_plan,
    plan_budget,
)
from raynas.experiment.driver import search
from raynas.experiment.resolve import resolve
from raynas.schedulers.no_learning import MIN_STEPS, not_learning


def test_asha_trains_a_trial_two_of_six_epochs_on_average():
    # rungs at 1 and 3 epochs: all train 1, a third 2 more, a ninth 3 more
    assert epochs_per_trial(6, stops_early=True) == pytest.approx(1 + 2 / 3 + 3 / 9)
    assert epochs_per_trial(6, stops_early=False) == 6


def test_a_large_dataset_is_subsampled_so_the_target_number_of_trials_fits():
    """Epochs of ~5 minutes on all the data, 16 minutes for trials, 2 at a time."""
    plan = make_plan(960, 2, 16, 6, epoch_s=300, epochs_per_trial=2.0, may_subsample=True,
                     in_time=True)
    assert plan.data_fraction == 0.16 and plan.trials == 16
    # one trial's share of the budget (102 s), or three typical epochs where that is more
    assert plan.cap_s == pytest.approx(max(0.85 * 960 * 2 / 16, 3 * 0.16 * 300))
    assert plan.grace_s == pytest.approx(0.16 * 300)
    assert plan.max_s == pytest.approx(6 * plan.grace_s)
    whole = make_plan(960, 2, 16, 6, epoch_s=300, epochs_per_trial=2.0, may_subsample=False,
                      in_time=True)  # --proxy-task or --fidelity given: the user's choice
    assert whole.data_fraction == 1 and whole.trials < 16


def test_small_data_keeps_all_of_it():
    plan = make_plan(960, 2, 16, 6, epoch_s=1.5, epochs_per_trial=2.0, may_subsample=True,
                     in_time=False)
    assert plan.data_fraction == 1 and plan.trials > 16
    assert "all the training data" in plan.describe() and "rungs" not in plan.describe()


def test_the_retraining_never_starts_an_epoch_it_cannot_finish():
    budget = Budget(100, time.time() - 40)  # 60 s left, 15 kept for the tail
    assert budget.retraining(10, 4.0) == (10, 1.0)
    assert budget.retraining(10, 20.0) == (2, 1.0)
    epochs, share = budget.retraining(10, 90.0)  # not one whole epoch fits
    assert epochs == 1 and share == pytest.approx(45 / 90, abs=0.02)


def test_chance_is_the_majority_share_and_the_label_entropy():
    data = load_dataset("digits")
    chance = label_chance(data)
    assert chance.accuracy == pytest.approx(np.bincount(data.y_val).max() / len(data.y_val))
    assert chance.loss == pytest.approx(np.log(10), abs=0.01)  # digits are balanced


CHANCE = Chance(accuracy=0.1, margin=0.01, loss=2.3026)


@pytest.mark.parametrize(("result", "stops"), [
    ({"val_accuracy": 0.1, "train_loss": 2.30, "steps": 800}, True),   # stuck at chance
    ({"val_accuracy": 0.1, "train_loss": 2.10, "steps": 800}, False),  # slowly, but learning
    ({"val_accuracy": 0.14, "train_loss": 2.30, "steps": 800}, False),  # above chance
    ({"val_accuracy": 0.1, "train_loss": 2.30, "steps": MIN_STEPS - 1}, False),  # too early
    ({"train_loss": 2.30, "steps": 800}, False),  # nothing to judge
])
def test_the_no_learning_rule(result, stops):
    assert not_learning(result, CHANCE) is stops


def test_a_candidate_measures_its_epoch_and_a_wider_one_takes_longer():
    space = load_space("macro_cnn")
    data = load_dataset("digits")
    costs = CostSettings(epoch_samples=1000)
    arch = space.sample(random.Random(0))
    widths = space.values("layers.channels")
    times = []
    for width in (min(widths), max(widths)):
        wide = {**arch,
                "layers": [{**layer, "channels": width} for layer in arch["layers"]]}
        times.append(measure(space, wide, data, costs, torch.device("cpu"), 64,
                             timed=False)[EPOCH_S])
    assert 0 < times[0] < times[1]


def test_an_epoch_that_overruns_its_limit_stops_with_the_reason():
    space = load_space("small_cnn")
    data = load_dataset("digits")
    arch = space.sample(random.Random(0))
    run = Run(space, arch, data.input_shape, data.num_classes, 3, torch.device("cpu"), 0)
    run.epoch_limit_s = 0.0
    with pytest.raises(TooSlow, match=r"epoch 1 ran \d+ s, past 0 s"):
        list(run.epochs(torch.as_tensor(data.x_train), torch.as_tensor(data.y_train), 3))


def test_a_trial_that_learns_nothing_is_stopped_whatever_the_scheduler(ray_local, tracking,
                                                                       tmp_path):
    """FIFO would train both for every epoch: the stuck one (lr 1e-9) stops after its first,
    tagged; the one that learns trains on."""
    space = tmp_path / "stuck.yaml"
    space.write_text(
        "name: stuck\nspace:\n  layers:\n    repeat: [1, 1]\n    block:\n"
        "      op: conv_3x3\n      channels: 16\n      stride: 1\n      connection: series\n"
        "  train:\n    lr: {choice: [1.0e-9, 0.003]}\n    batch_size: 8\n    optimizer: adam\n")
    result = search(SearchConfig(space=str(space), strategy="grid", scheduler="fifo",
                                 max_epochs=3, retrain_epochs=1))
    runs = {r.data.params["arch.train.lr"]: r for r in child_runs(MlflowClient(tracking), result)}
    stuck, learner = runs["1e-09"], runs["0.003"]
    assert stuck.data.tags["raynas.stopped_by"] == "no-learning"
    client = MlflowClient(tracking)
    epochs = {lr: len(client.get_metric_history(run.info.run_id, "val_accuracy"))
              for lr, run in runs.items()}
    assert epochs == {"1e-09": 1, "0.003": 3}
    assert "raynas.stopped_by" not in learner.data.tags
    assert result.best["arch"]["train"]["lr"] == 0.003


def test_a_budget_is_planned_from_candidates_timed_where_the_trials_run(ray_local):
    """The plan times candidates in Ray tasks on the data; applied, it adds the cap on a
    candidate's predicted epoch as a constraint, and rungs in seconds for ASHA."""
    resolved = resolve(SearchConfig(scheduler="asha", time_budget="20m"))
    said = []
    plan = plan_budget(resolved, Budget(1200, time.time()), 20, said.append)
    assert plan is not None and not said
    assert 0 < plan.epoch_s < plan.cap_s
    assert plan.data_fraction == 1  # 1,257 digits: all of them fit
    planned = apply_plan(resolved, plan)
    cap = [c for c in planned.constraints if c.metric == EPOCH_S]
    assert [(c.op, c.bound) for c in cap] == [("<=", round(plan.cap_s, 1))]
    assert planned.rungs.attr == "time_total_s" and planned.rungs.grace == plan.grace_s


def test_a_short_budget_is_not_planned():
    """Below PLAN_MIN_S of trials, timing candidates first would cost more than it saves."""
    resolved = resolve(SearchConfig(time_budget="45s"))
    said = []
    assert plan_budget(resolved, Budget(45, time.time()), 20, said.append) is None
    assert said and "too short to time candidates" in said[0]
    assert PLAN_MIN_S > 45
