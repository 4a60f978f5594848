"""Optuna samplers as Tune can keep them: Tune pickles the searcher (and so its sampler) into
the experiment state when the Tuner is built and at every checkpoint, for ``--resume``."""

from __future__ import annotations

import threading
from typing import Any

import optuna


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
