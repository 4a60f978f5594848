"""BANANAS (White, Neiswanger & Savani, AAAI 2021): Bayesian optimisation with a neural
predictor, as a Tune ``Searcher``.

Each proposal: fit an ensemble of MLPs on the results so far (``predictor.Ensemble``, on the
space's decision encoding, see ``raynas.strategies.predictor``), make candidates by mutating the
best architectures so far (plus a few random ones), score every candidate with independent
Thompson sampling (ITS, the paper's acquisition: one draw from the ensemble's Gaussian per
candidate) and propose the best one not proposed before. Until ``num_init`` results have
arrived it proposes random architectures.

Written by hand, like ``evolution`` and ``rl``: the reference code (naszilla) works on its own
benchmark classes, and its mutation needs the space's structure (``Space.mutate`` adds or removes
a layer and keeps conditional decisions consistent).
"""

from __future__ import annotations

from raynas.space import Arch, Space, arch_hash
from raynas.strategies.predictor import PredictorSearcher, argmax, thompson


class Bananas(PredictorSearcher):
    """``num_candidates`` candidates per proposal: each, with probability ``random_share``, a
    random architecture, else a mutation (one or two ``Space.mutate`` steps) of one of the
    ``num_parents`` best so far; the one with the highest ITS draw is proposed.

    Asynchronous: a proposal needs only the results that have arrived, and running trials are
    never proposed again, so any number may run at once (ITS's randomness spreads them)."""

    def __init__(self, space: Space, metric: str | None = None, mode: str | None = None, *,
                 num_init: int = 10, num_candidates: int = 100, num_parents: int = 10,
                 random_share: float = 0.2, members: int = 5, hidden: int = 32,
                 steps: int = 100, lr: float = 0.01, seed: int = 0) -> None:
        super().__init__(space, metric, mode, min_data=num_init, members=members,
                         hidden=hidden, steps=steps, lr=lr, seed=seed)
        self.num_candidates = num_candidates
        self.num_parents = num_parents
        self.random_share = random_share

    def next_arch(self) -> Arch:
        model = self.model()
        if model is None:
            return self.unseen_sample()
        candidates = self.candidates()
        if not candidates:
            return self.unseen_sample()
        scores = thompson(self.rng, model.predict(self.features(candidates)))
        return candidates[argmax(scores)]

    def candidates(self) -> list[Arch]:
        parents = self.best(self.num_parents)
        found: dict[str, Arch] = {}
        for _ in range(self.num_candidates):
            if self.rng.random() < self.random_share:
                arch = self.space.sample(self.rng)
            else:
                arch = self.space.mutate(self.rng.choice(parents), self.rng)
                if self.rng.random() < 0.5:
                    arch = self.space.mutate(arch, self.rng)
            digest = arch_hash(arch)
            if digest not in self.proposed:
                found.setdefault(digest, arch)
        return list(found.values())
