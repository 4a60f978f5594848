"""MO-ASHA: asynchronous successive halving on several objectives (Schmucker et al. 2021,
"Multi-objective Asynchronous Successive Halving").

Tune's schedulers rank trials by one metric and Optuna has no multi-objective pruner, so this is
a Tune ``TrialScheduler`` of our own. It keeps ASHA's rungs and its stop-or-continue decision
(Tune's ``AsyncHyperBandScheduler``: a trial is judged once, when it first reaches a rung, against
the results recorded there so far) and replaces the scalar cutoff by a multi-objective ranking:

1. feasible before infeasible: a result that breaks a ``--constraint`` is never promoted;
2. non-dominated sorting (Pareto ranks, from ``moocore``, a maintained C implementation);
3. inside a Pareto front, the ε-net order that Schmucker et al. propose (EpsNet, after Clarkson
   2005; Syne Tune's MO-ASHA ranks so): the best point on the first objective, then repeatedly
   the point farthest from those already taken, on objectives min-max normalised over the rung.

ε-net rather than NSGA-II's crowding distance because rungs are small: a promotion quota of one
or two trials out of a front of three or four is the common case, and crowding distance gives
every front's two extremes an infinite distance, so it cannot tell them apart (and with two
objectives every point of a front of two is an extreme); the ε-net seeds on the primary
objective and then spreads the promotions along the front.

A trial continues if it is among the top ``ceil(n / reduction_factor)`` of the ``n`` results
recorded at its rung, itself included - what Tune's ASHA percentile cutoff keeps for distinct
values.

The ε-net ordering is written here because Syne Tune's (``compute_epsilon_net``) comes with
Syne Tune's heavy dependencies (xgboost, statsmodels, pandas); it is a dozen lines.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from raynas.estimation.fidelity import ETA, TIME_ATTR
from raynas.objectives.constraints import Constraint, violations
from raynas.objectives.pareto import Objective

if TYPE_CHECKING:
    from ray.tune.experiment import Trial
import moocore


@dataclass
class Rung:
    """The results recorded at one budget: each trial's objectives (signed so that lower is
    better) and which of them broke a constraint."""

    milestone: float
    points: dict[str, tuple[float, ...]] = field(default_factory=dict)
    infeasible: set[str] = field(default_factory=set)

    def order(self) -> list[str]:
        """Trial ids, best first (see the module docstring)."""
        ids = list(self.points)
        points = np.array([self.points[t] for t in ids], dtype=float).reshape(len(ids), -1)
        feasible = np.array([t not in self.infeasible for t in ids], dtype=bool)
        return [ids[i] for i in promotion_order(points, feasible)]


def promotion_order(points: np.ndarray, feasible: np.ndarray) -> list[int]:
    """Row indices of ``points`` (one row per result, every objective to be minimised), best
    first: feasible rows before infeasible ones, each group by Pareto rank, each front in
    ε-net order."""
    low, span = points.min(axis=0), np.ptp(points, axis=0)
    scaled = (points - low) / np.where(span > 0, span, 1.0)
    order: list[int] = []
    for group in (np.flatnonzero(feasible), np.flatnonzero(~feasible)):
        if not len(group):
            continue
        ranks = moocore.pareto_rank(points[group])
        for rank in np.unique(ranks):
            front = group[ranks == rank]
            order.extend(int(front[i]) for i in epsilon_net(scaled[front]))
    return order


def epsilon_net(points: np.ndarray) -> list[int]:
    """Greedy farthest-point order: the best point on the first column, then each time the
    point whose distance to the nearest point already taken is largest (ties: the earliest)."""
    taken = [int(np.argmin(points[:, 0]))]
    nearest = np.linalg.norm(points - points[taken[0]], axis=1)
    while len(taken) < len(points):
        nearest[taken] = -1.0
        taken.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, np.linalg.norm(points - points[taken[-1]], axis=1))
    return taken


class MultiObjectiveASHA(FIFOScheduler):
    """ASHA over several objectives (and constraints); plain data only, so Tune can pickle it
    into its experiment state for ``--resume``."""

    def __init__(self, objectives: Sequence[Objective], max_t: float, *,
                 constraints: Sequence[Constraint] = (), time_attr: str = TIME_ATTR,
                 grace_period: float = 1, reduction_factor: float = ETA):
        if len(objectives) < 2:
            raise ValueError("MultiObjectiveASHA needs at least two objectives")
        super().__init__()
        self.objectives = [(metric, mode) for metric, mode in objectives]
        self.constraints = list(constraints)
        self.time_attr = time_attr
        self.max_t = max_t
        self.reduction_factor = reduction_factor
        self._metric = self.objectives[0][0]  # Tune checks that trials report it
        self.rungs: list[Rung] = []
        milestone = grace_period
        while milestone < max_t:  # no rung at max_t: a trial there is done anyway
            self.rungs.append(Rung(milestone))
            milestone *= reduction_factor
        self.num_stopped = 0

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Tune hands over ``TuneConfig``'s metric and mode: they must be our first objective
        (False makes Tune refuse the run, as it does for a conflicting scheduler)."""
        return (metric or self.objectives[0][0], mode or self.objectives[0][1]) == \
            self.objectives[0]

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        if self.time_attr not in result:
            return TrialScheduler.CONTINUE
        if result[self.time_attr] >= self.max_t:
            return TrialScheduler.STOP
        promoted = self.record(trial.trial_id, result)
        if promoted is False:
            self.num_stopped += 1
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        if self.time_attr in result:  # a finished trial informs later decisions at its rung
            self.record(trial.trial_id, result)

    def record(self, trial_id: str, result: dict) -> bool | None:
        """Record ``result`` at the highest rung it reached, unless the trial was judged there
        already, and say whether the trial is promoted (None: no decision - below the first rung,
        judged already, or an objective missing or not finite)."""
        budget = result[self.time_attr]
        values = [result.get(m) for m, _ in self.objectives]
        if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in values):
            return None  # e.g. a trial rejected before training reports NaN
        point = tuple(-float(v) if mode == "max" else float(v)
                      for v, (_, mode) in zip(values, self.objectives, strict=True))
        for rung in reversed(self.rungs):
            if budget < rung.milestone:
                continue
            if trial_id in rung.points:  # judged here already: the decision stands
                return None
            rung.points[trial_id] = point
            if violations(result, self.constraints):
                rung.infeasible.add(trial_id)
                return False
            keep = math.ceil(len(rung.points) / self.reduction_factor)
            return trial_id in rung.order()[:keep]
        return None

    def debug_string(self) -> str:
        rungs = ", ".join(f"{r.milestone:g}: {len(r.points)} recorded" for r in self.rungs)
        return (f"MO-ASHA on {', '.join(f'{m}:{mode}' for m, mode in self.objectives)}: "
                f"{self.num_stopped} stopped; rungs {rungs}")
