"""Optuna's pieces as Tune can use them: a sampler Tune can pickle (Tune keeps the searcher, and
so its sampler, in the experiment state when the Tuner is built and at every checkpoint, for
``--resume``), and Ray's ``OptunaSearch`` taking earlier results on a define-by-run space."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FixedTrial, TrialState, create_trial
from ray.tune.search.optuna import OptunaSearch as RayOptunaSearch
from ray.tune.utils.util import flatten_dict


class NSGAIISampler(optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II with pickling. Optuna 5's genetic-algorithm samplers
    (``optuna.samplers._ga.BaseGASampler``) hold a ``threading.Lock`` and define no
    ``__getstate__``, so the stock sampler cannot be pickled: ``tune.Tuner`` fails when it saves
    its state. The lock only guards the population cache within one process: a copy starts
    with a fresh one."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()


class OptunaSearch(RayOptunaSearch):
    """Ray's ``OptunaSearch``, able to take earlier results (``add_evaluated_point``, which Tune
    calls for ``points_to_evaluate`` with ``evaluated_rewards``) on a define-by-run space. Ray
    refuses them there: it cannot tell which decisions a point's trial suggested, from which
    distributions. The space's own define-by-run function tells it, run on Optuna's
    ``FixedTrial`` of the point, which records exactly that.

    A suggestion also costs less: Ray runs the define-by-run function on a proxy of the trial
    that wraps every ``suggest_*`` call and reads its signature (``inspect.signature``) each
    time, to record the values suggested; the trial records them itself (``Trial.params``),
    so the function runs on the trial and they are read once. On NAS-Bench-201's six
    decisions that was a third of a simulated random-search trial."""

    def _suggest_from_define_by_run_func(self, func: Callable[[optuna.Trial], Any],
                                         ot_trial: optuna.Trial) -> dict[str, Any]:
        returned = func(ot_trial)
        return {**ot_trial.params, **returned} if returned else ot_trial.params

    def add_evaluated_point(self, parameters: dict[str, Any], value: float | list[float],
                            error: bool = False, pruned: bool = False,
                            intermediate_values: list[float] | None = None) -> None:
        if not callable(self._space):
            super().add_evaluated_point(parameters, value, error, pruned, intermediate_values)
            return
        fixed = FixedTrial(flatten_dict(parameters, "/"))
        self._space(fixed)
        values = list(value) if isinstance(value, list | tuple) else [value]
        # A NaN or infinite value fails the trial, as Optuna's own ``Study.tell`` does.
        state = (TrialState.FAIL if error or not all(map(math.isfinite, values))
                 else TrialState.PRUNED if pruned else TrialState.COMPLETE)
        self._ot_study.add_trial(create_trial(
            state=state, params=fixed.params, distributions=fixed.distributions,
            values=values if state == TrialState.COMPLETE else None,
            intermediate_values=dict(enumerate(intermediate_values or []))))
