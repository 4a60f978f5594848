"""Never train the same architecture twice within a search.

Tune has no such wrapper (its ``Repeater`` does the opposite). Different flat configs can decode
to the same architecture (values of inactive decisions differ) and converged strategies re-propose
what they have seen, so every strategy goes through ``Dedup``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from ray.tune.search import Searcher

from raynas.space import Space, arch_hash

logger = logging.getLogger(__name__)

Reuse = Callable[[str, str, dict[str, Any]], None]


def _metrics(metric: str | list[str] | None) -> list[str]:
    if metric is None:
        return []
    return [metric] if isinstance(metric, str) else list(metric)


def _feasible(result: dict) -> bool:
    """False for a result that breaks a ``--constraint`` (see ``estimation.costs``): the
    strategy sees such a trial as a failed one."""
    return result.get("feasible") is not False


class Dedup(Searcher):
    """Wraps a searcher; a suggestion whose architecture hash has a result already is answered
    from that result (the wrapped searcher is told at once and asked again), and one whose
    architecture is still training waits for that trial's result. Only new architectures
    become Tune trials. Every reuse is kept in ``reused`` and passed to ``on_reuse(original
    trial id, arch hash, result)`` so the tracker can record it.

    Follows Tune's wrapper protocol (a ``searcher`` attribute, ``get_state``/``set_state`` for
    its own state), so Tune checkpoints it together with the wrapped searcher.
    """

    def __init__(self, searcher: Searcher, space: Space, max_retries: int = 1000) -> None:
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher = searcher
        self.space = space
        self.max_retries = max_retries
        self.results: dict[str, tuple[str | None, dict[str, Any]]] = {}  # hash -> (trial, result)
        self.running: dict[str, tuple[str, str]] = {}  # Tune trial id -> (inner id, hash)
        self.waiting: dict[str, list[str]] = {}  # hash -> inner ids waiting for its result
        self.reused: list[dict[str, Any]] = []
        self.worst: dict[str, float] = {}  # objective -> worst successful value so far
        self.on_reuse: Reuse | None = None

    def set_search_properties(self, metric, mode, config: dict, **spec: Any) -> bool:
        ok = self.searcher.set_search_properties(metric, mode, config, **spec)
        self._metric = self.searcher.metric or metric
        self._mode = self.searcher.mode or mode
        return ok

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if len(self.results) + len(self.running) >= self.space.size():
            return Searcher.FINISHED  # every architecture has been (or is being) trained
        busy = {h for _, h in self.running.values()}
        for attempt in range(self.max_retries):
            inner_id = trial_id if attempt == 0 else f"{trial_id}~{attempt}"
            config = self.searcher.suggest(inner_id)
            if config is None or config == Searcher.FINISHED:
                return config
            digest = arch_hash(self.space.decode(config))
            if digest in self.results:
                self._reuse(inner_id, digest)
            elif digest in busy:
                self.waiting.setdefault(digest, []).append(inner_id)
            else:
                self.running[trial_id] = (inner_id, digest)
                return config
        logger.warning("the strategy proposed only already-evaluated architectures %d times "
                       "in a row; ending the search", self.max_retries)
        return Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.running and _feasible(result):
            self.searcher.on_trial_result(self.running[trial_id][0], result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id not in self.running:
            return
        inner_id, digest = self.running.pop(trial_id)
        metrics = _metrics(self.metric)
        if not error and result and _feasible(result) and all(m in result for m in metrics):
            self._observe(result)
        elif self.worst:  # failed or infeasible: the strategy sees the worst result so far
            result, error = self.penalty(), False
        elif not _feasible(result or {}):  # infeasible before any trial gave a scale
            result, error = None, True
        self.searcher.on_trial_complete(inner_id, result=result, error=error)
        if not error and result:
            self.results[digest] = (trial_id, {k: v for k, v in result.items()
                                               if isinstance(v, int | float | str)})
        for waiter in self.waiting.pop(digest, []):
            if digest in self.results:
                self._reuse(waiter, digest)
            else:  # the original failed: the duplicate has no result either
                self.searcher.on_trial_complete(waiter, error=True)

    def _observe(self, result: dict) -> None:
        modes = [self.mode] if isinstance(self.mode, str) else list(self.mode or [])
        for metric, mode in zip(_metrics(self.metric), modes, strict=False):
            value = result[metric]
            if isinstance(value, int | float) and math.isfinite(value):
                worst = self.worst.get(metric, value)
                self.worst[metric] = min(worst, value) if mode == "max" else max(worst, value)

    def penalty(self) -> dict[str, float]:
        """What a failed trial (an error, NaN loss, a missing metric) counts as for the
        strategy: the worst value of each objective seen so far in this search - so the
        strategy steers away from it without a made-up number distorting its model. Before any
        trial succeeded there is no scale yet, and the failure is passed on as an error."""
        return {**self.worst, "raynas_failed": True}

    def add_evaluated_point(self, parameters: dict[str, Any], value: float | list[float],
                            error: bool = False, pruned: bool = False,
                            intermediate_values: list[float] | None = None) -> None:
        """An earlier result: the wrapped searcher learns it, and the architecture is answered
        from it from now on instead of trained again."""
        self.searcher.add_evaluated_point(parameters, value, error, pruned, intermediate_values)
        values = list(value) if isinstance(value, list | tuple) else [value]
        if error or pruned or not all(map(math.isfinite, values)):
            return
        result = dict(zip(_metrics(self.metric), values, strict=True))
        self._observe(result)
        self.results[arch_hash(self.space.decode(parameters))] = (None, result)

    def _reuse(self, inner_id: str, digest: str) -> None:
        original, result = self.results[digest]  # original None: an add_evaluated_point
        self.searcher.on_trial_complete(inner_id, result=dict(result))
        self.reused.append({"arch_hash": digest, "trial_id": original})
        if self.on_reuse and original is not None:
            self.on_reuse(original, digest, result)

    # BOHB's scheduler pauses and resumes trials through the searcher.
    def on_pause(self, trial_id: str) -> None:
        self.searcher.on_pause(self.running[trial_id][0])

    def on_unpause(self, trial_id: str) -> None:
        self.searcher.on_unpause(self.running[trial_id][0])

    def get_state(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()
                if k not in ("searcher", "space", "on_reuse")}

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
