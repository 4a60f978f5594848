"""Common ground of the searchers we write ourselves (evolution, REINFORCE).

Both propose whole architectures from a ``Space`` and learn from one scalar reward per trial, so
metric/mode handling, the pending-trial bookkeeping and save/restore live here once.
"""

from __future__ import annotations

import math
import pickle
import random
from typing import Any

from ray.tune.search import Searcher

from raynas.space import Arch, Space


class SpaceSearcher(Searcher):
    """A Tune ``Searcher`` over a space's architectures with a seeded RNG.

    Subclasses implement ``propose()`` (the next architecture) and ``learn(trial_id, arch,
    reward)`` (a finished trial; ``reward`` is the metric, negated when minimising). All state
    except the space is in ``__dict__``, so ``get_state``/``save`` capture a search exactly and a
    restored searcher continues with the same random stream.
    """

    def __init__(self, space: Space, metric: str | None = None, mode: str | None = None,
                 seed: int = 0) -> None:
        super().__init__(metric=metric, mode=mode)
        self.space = space
        self.rng = random.Random(seed)
        self.pending: dict[str, Arch] = {}

    # --- what subclasses write ---------------------------------------------------------------
    def propose(self) -> Arch:
        raise NotImplementedError

    def learn(self, trial_id: str, arch: Arch, reward: float) -> None:
        raise NotImplementedError

    def forget(self, trial_id: str) -> None:
        """A trial ended without a usable reward (error, missing or non-finite metric)."""

    # --- the Tune Searcher interface ----------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        # Values given at construction win; Tune's TuneConfig fills the gaps. The space comes
        # from ``Space``, so ``config`` (Tune's param_space) is not needed.
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any]:
        if not self._metric or self._mode not in ("min", "max"):
            raise RuntimeError(f"{type(self).__name__}: metric and mode must be set "
                               "(pass them or use TuneConfig(metric=..., mode=...))")
        arch = self.propose()
        self.pending[trial_id] = arch
        return self.space.encode(arch)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        arch = self.pending.pop(trial_id, None)
        if arch is None:
            return
        reward = None if error or not result else self.reward(result)
        if reward is None:
            self.forget(trial_id)
        else:
            self.learn(trial_id, arch, reward)

    def reward(self, result: dict) -> float | None:
        value = result.get(self._metric)
        if not isinstance(value, int | float) or not math.isfinite(value):
            return None
        return float(value) if self._mode == "max" else -float(value)

    # --- state -----------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "space"}

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))
