"""``--time-budget``: one deadline for a search, and the plan that makes it search well.

A fixed number of epochs per trial suits small data, where every trial is cheap; on real-sized
data the same settings spend a 20-minute budget on two trials. So before the trials start,
the planner times a training step of a few candidates of the space on this data, where the
trials run, and chooses from the budget:

- the share of the training data each trial trains on (``--proxy-task data=...``), so that
  about ``--num-trials`` candidates fit (the validation split stays whole: it is what trials
  are compared on);
- a cap on a candidate's predicted epoch, checked like a ``--constraint`` on ``epoch_s``
  before the candidate trains: one that would eat a trial's share of the budget in an epoch is
  rejected (tagged and counted), and a running epoch that overruns its prediction far is
  stopped (``raynas.estimation.train``);
- rungs in seconds of training (Tune's ``time_total_s``) for the schedulers that take any
  monotone ``time_attr`` (ASHA, Hyperband, the median rule): a slow candidate gets a small
  slice of the budget, not ``--max-epochs`` epochs.

Flags a user gives win: ``--proxy-task`` or a ``--fidelity`` other than epochs keeps the data
whole, ``--no-budget-plan`` turns the plan off.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any

import ray

from raynas.config import RETRAIN_SHARE
from raynas.estimation.costs import EPOCH_S, CostSettings
from raynas.estimation.train import calibrate
from raynas.objectives.constraints import Constraint
from raynas.strategies.base import Rungs

#: Candidates timed before the trials: their median is the plan's typical candidate.
PLAN_SAMPLES = 12
#: The share of the trials' time the timing may take: past it, no new candidate is timed (on a
#: busy 2-core machine the twelve took most of a 45-second budget).
PLAN_SHARE = 0.05
#: Trials' seconds below which no plan is made: starting the timing tasks alone took 80 s on a
#: 2-core machine under full load, more than a short budget's trials could win back.
PLAN_MIN_S = 120.0
#: Seconds a trial costs besides training (actor, costs, checkpoints, MLflow), on 2 cores.
TRIAL_OVERHEAD_S = 3.0
#: The share of the trials' time the plan fills; the rest absorbs start-ups and stragglers.
FILL = 0.85
#: The smallest share of the training data a trial trains on.
MIN_FRACTION = 1 / 27
#: Tune's own measure of a trial's training time, for rungs in seconds.
TIME_TOTAL = "time_total_s"
#: Seconds kept at the end for the model's registration, the report and MLflow's writes.
TAIL_S = 15.0


@dataclass
class Budget:
    """``--time-budget``: one deadline for the trials and the final retraining, counted from
    ``started`` (the command's start: loading the data and starting Ray count too)."""

    seconds: float | None
    started: float

    @property
    def left(self) -> float | None:
        return None if self.seconds is None else self.seconds - (time.time() - self.started)

    def for_trials(self) -> float | None:
        """Tune's ``time_budget_s``: the time left, less the share kept for retraining and the
        tail (at least 1 s: Tune takes no less)."""
        left = self.left
        return None if left is None else max(1.0, left - RETRAIN_SHARE * self.seconds - TAIL_S)

    @property
    def trials_over(self) -> bool:
        """Whether Tune's share of the budget has run out (it then stopped the trials)."""
        return self.for_trials() == 1.0

    def retraining(self, wanted: int, epoch_s: float) -> tuple[int, float]:
        """(epochs, share of train+val) the retraining fits in the time left: as many of
        ``wanted`` whole epochs as fit; if not even one does, one epoch on the share that
        fits, so that no epoch starts that cannot end within the budget."""
        left = self.left
        if left is None or epoch_s <= 0:
            return wanted, 1.0
        usable = left - TAIL_S
        epochs = min(wanted, math.floor(usable / epoch_s))
        if epochs >= 1:
            return epochs, 1.0
        return 1, max(0.01, min(1.0, usable / epoch_s))


@dataclass(frozen=True)
class BudgetPlan:
    """What the planner chose, and from what."""

    epoch_s: float  # a typical candidate's epoch on all the training data
    data_fraction: float  # of the training data each trial trains on
    cap_s: float  # a candidate's predicted epoch (on that share) may take at most this
    grace_s: float  # the first rung, in seconds of training (a typical epoch)
    max_s: float  # a trial's training at most, in seconds (``--max-epochs`` typical epochs)
    trials: int  # about as many candidates fit
    in_time: bool  # the scheduler compares trials in seconds

    def describe(self) -> str:
        data = ("all the training data" if self.data_fraction >= 1 else
                f"{self.data_fraction:.0%} of the training data")
        rungs = (f"; rungs in seconds: {self.grace_s:.0f} s first, {self.max_s:.0f} s at most"
                 if self.in_time else "")
        return (f"budget plan: an epoch of a typical candidate takes ~{self.epoch_s:.1f} s "
                f"here; trials train on {data}, ~{self.trials} fit; a candidate predicted over "
                f"{self.cap_s:.0f} s an epoch is rejected{rungs}")

    def tags(self) -> dict[str, str]:
        return {"raynas.plan": self.describe(), "raynas.plan.data_fraction":
                f"{self.data_fraction:.4g}", "raynas.plan.cap_s": f"{self.cap_s:.4g}"}


def make_plan(trials_s: float, concurrency: int, target_trials: int, max_epochs: int,
              epoch_s: float, epochs_per_trial: float, may_subsample: bool,
              in_time: bool) -> BudgetPlan:
    """The plan for ``trials_s`` seconds of trials, ``concurrency`` at a time, aiming at
    ``target_trials``, when a typical candidate's epoch on all the data takes ``epoch_s`` and a
    trial trains ``epochs_per_trial`` epochs on average (its scheduler stops most early)."""
    share = FILL * trials_s * concurrency / target_trials  # one trial's seconds
    fraction = 1.0
    if may_subsample:
        wanted = (share - TRIAL_OVERHEAD_S) / (epochs_per_trial * epoch_s)
        fraction = min(1.0, max(MIN_FRACTION, wanted))
        if fraction < 1:  # down to two significant digits: a share a person can read
            unit = 10.0 ** (math.floor(math.log10(fraction)) - 1)
            fraction = max(MIN_FRACTION, math.floor(fraction / unit) * unit)
    typical = fraction * epoch_s
    trials = max(1, math.floor(FILL * trials_s * concurrency
                               / (epochs_per_trial * typical + TRIAL_OVERHEAD_S)))
    return BudgetPlan(epoch_s, fraction, cap_s=max(share, 3 * typical), grace_s=typical,
                      max_s=max_epochs * typical, trials=trials, in_time=in_time)


def epochs_per_trial(max_epochs: int, stops_early: bool, eta: int = 3) -> float:
    """The epochs a trial trains on average: all of them, or under successive halving (rungs
    at 1, eta, eta^2, ... epochs, 1/eta of the trials going on at each)."""
    if not stops_early:
        return float(max_epochs)
    milestones = [m for m in (eta**k for k in range(16)) if m < max_epochs] + [max_epochs]
    total, before = 0.0, 0
    for k, milestone in enumerate(milestones):
        total += (milestone - before) / eta**k
        before = milestone
    return total


def plan_budget(resolved: Any, budget: Budget, target_trials: int,
                progress: Any) -> BudgetPlan | None:
    """Time up to ``PLAN_SAMPLES`` random candidates where the trials run, in at most
    ``PLAN_SHARE`` of their time, then plan (None when no candidate could be timed: a model
    that trains by its own loop)."""
    config, data = resolved.config, resolved.data
    resources = config.resources
    trials_s = budget.for_trials()
    if trials_s < PLAN_MIN_S:
        progress(f"budget plan: none ({trials_s:.0f} s for the trials is too short to time "
                 f"candidates first; the plan needs {PLAN_MIN_S:.0f})")
        return None
    # Timed as the trials will run: ``concurrency`` Ray tasks at once with the trials'
    # resources, each timing its share of the candidates, so the timings see the same
    # contention (in the driver alone, the same candidates timed up to 10x faster on a busy
    # machine, and the cap then rejected most of them).
    timing = ray.remote(calibrate).options(num_cpus=resources.cpus_per_trial,
                                           num_gpus=resources.gpus_per_trial)
    costs = CostSettings(epoch_samples=epoch_samples(data, 1.0))
    tasks = max(1, min(resources.concurrency, PLAN_SAMPLES))
    shared = ray.put(data)  # once for every task
    sample = [m for part in ray.get([
        timing.remote(resolved.space, shared, costs, resources.gpus_per_trial,
                      resources.cpus_per_trial, config.seed + i, timed=False,
                      count=PLAN_SAMPLES // tasks, seconds=PLAN_SHARE * trials_s)
        for i in range(tasks)]) for m in part]
    timed = [m[EPOCH_S] for m in sample if EPOCH_S in m]
    if not timed:
        progress("budget plan: none (the model trains by its own loop, so its epochs cannot "
                 "be timed ahead)")
        return None
    fidelity, scheduler = resolved.fidelity, resolved.scheduler
    may_subsample = (config.proxy_task is None and not fidelity.rungs
                     and "data" in resolved.task.fidelities)
    return make_plan(budget.for_trials(), config.resources.concurrency, target_trials,
                     config.max_epochs, statistics.median(timed),
                     epochs_per_trial(config.max_epochs, scheduler.in_time), may_subsample,
                     scheduler.in_time)


def apply_plan(resolved: Any, plan: BudgetPlan) -> Any:
    """The resolved settings under ``plan``: the trials' share of the data, the cap on
    ``epoch_s`` as one more constraint, and rungs in seconds where the scheduler takes them."""
    fidelity = resolved.fidelity
    if plan.data_fraction < 1:
        fidelity = replace(fidelity, task=replace(fidelity.task, data=plan.data_fraction))
    cap = Constraint(EPOCH_S, "<=", round(plan.cap_s, 1))
    rungs = Rungs(TIME_TOTAL, plan.grace_s, plan.max_s) if plan.in_time else resolved.rungs
    return replace(resolved, fidelity=fidelity, constraints=(*resolved.constraints, cap),
                   rungs=rungs)


def epoch_samples(data: Any, fraction: float) -> float:
    """What a trial's epoch processes: its share of the training split, and the validation
    split at a third of a training sample's cost (a forward pass, no backward)."""
    train, val = data.split_sizes[:2]
    return fraction * train + val / 3
