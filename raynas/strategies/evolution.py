"""Regularized (aging) evolution, as in AmoebaNet (Real et al. 2019), as a Tune ``Searcher``.

Written by hand because no library offers it over our spaces: Tune's and Optuna's evolutionary
samplers work on fixed-length vectors, while a NAS mutation must be able to add or remove a
layer of a repeated block (``Space.mutate`` does) and keep conditional decisions consistent.
"""

from __future__ import annotations

import random
from collections import deque

from raynas.space import Arch, Space
from raynas.strategies.base import SpaceSearcher


def crossover(space: Space, a: Arch, b: Arch, rng: random.Random) -> Arch:
    """Uniform crossover over the decision list: each active decision comes from either parent.

    Decisions are visited in order, so a repeat count is chosen before the copies it enables;
    a copy that only one parent has is taken from that parent.
    """
    fa, fb = space.encode(a), space.encode(b)
    child: dict = {}
    for decision in space.decisions():
        if not decision.active(child):
            continue
        first, second = (fa, fb) if rng.random() < 0.5 else (fb, fa)
        child[decision.key] = first.get(decision.key, second.get(decision.key))
    return space.decode(child)


class RegularizedEvolution(SpaceSearcher):
    """Aging evolution: a population of the last ``population_size`` results; each new
    architecture mutates (one decision of) the winner of a tournament of ``sample_size``
    members drawn with replacement (Real et al. 2019's algorithm 1, and NAS-Bench-201's
    ``R_EA.py``); the oldest member dies when a new one joins, whatever its fitness.

    Asynchronous by construction: a suggestion needs only the results that have arrived, so any
    number of trials may run at once, and trials that fail or are stopped early just contribute
    (or not) their last result. The first ``population_size`` architectures are random; those
    given through ``add_evaluated_point`` (an extended search's earlier trials) count among
    them, so an extended search does not start from random ones again.
    """

    def __init__(self, space: Space, metric: str | None = None, mode: str | None = None, *,
                 population_size: int = 20, sample_size: int = 5, crossover_prob: float = 0.0,
                 seed: int = 0) -> None:
        super().__init__(space, metric, mode, seed)
        if sample_size < 1 or population_size < 1:
            raise ValueError("need sample_size >= 1 and population_size >= 1")
        self.population_size = population_size
        self.sample_size = sample_size
        self.crossover_prob = crossover_prob
        self.population: deque[tuple[Arch, float]] = deque(maxlen=population_size)
        self.num_proposed = 0

    def propose(self) -> Arch:
        self.num_proposed += 1
        if self.num_proposed + self.num_evaluated <= self.population_size or not self.population:
            return self.space.sample(self.rng)
        parent = self._tournament()
        if self.crossover_prob and self.rng.random() < self.crossover_prob:
            parent = crossover(self.space, parent, self._tournament(), self.rng)
        return self.space.mutate(parent, self.rng)

    def learn(self, trial_id: str, arch: Arch, reward: float) -> None:
        self.population.append((arch, reward))  # the deque's maxlen ages out the oldest

    def _tournament(self) -> Arch:
        entrants = self.rng.choices(self.population, k=self.sample_size)
        return max(entrants, key=lambda member: member[1])[0]
