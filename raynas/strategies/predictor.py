"""What the predictor-based searchers (``bananas``, ``pnas``) share: a fixed-length encoding of
any space's architectures, an ensemble of small MLPs that predicts a trial's reward from it, and
a ``SpaceSearcher`` base that keeps the results, refits the ensemble when they change and never
proposes an architecture twice.

**Encoding.** The space's own decision list (``Space.decisions()``), the same for every space, so
the predictors work on macro chains and cells alike: a categorical decision is one-hot over its
values, an integer or float is scaled to [0, 1] (on a log scale for a log range) with an extra
"active" column when it is conditional, and a decision that is inactive in an architecture (a
layer beyond its count) is all zeros. On a cell space this one-hot of every edge's (or node's)
op and inputs is the *adjacency* encoding of White et al.; their *path* encoding would need the
cell model's graph semantics, which the space layer does not know, and on cells as small as
NAS-Bench-201's the two predict about equally well (White et al., "A Study on Encodings for
Neural Architecture Search", NeurIPS 2020).

**Ensemble.** ``members`` (5) MLPs of two hidden ReLU layers of ``hidden`` (32) units, trained
together (block-diagonal weights, see ``Ensemble``) for ``steps`` (100) full-batch Adam steps on
the standardised rewards; the members differ by their initialisation and a bootstrap weighting
of the data, and their spread is the predictor's uncertainty. Training is deterministic given
the data (the generator is seeded from the searcher's seed and the number of results), so a
restored searcher would refit the same weights; the fitted ensemble is in the state too, so it
is not refit needlessly. A fit on 50 results takes ~50 ms on one thread. torch's thread count
is the caller's: the searcher does not change it (on a loaded 2-core machine a second thread
makes these tiny matrix products wait, up to ~10x slower).
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch

from raynas.space import Arch, Space, arch_hash
from raynas.space.nodes import Choice
from raynas.strategies.base import SpaceSearcher, one_thread

Flat = dict[str, Any]


class Encoder:
    """Architecture (or flat config) -> a list of ``width`` floats over the space's decisions."""

    def __init__(self, space: Space) -> None:
        self.decisions = space.decisions()
        self.columns: list[tuple[int, Any]] = []  # per decision: (first column, how to encode)
        width = 0
        for d in self.decisions:
            param = d.param
            if isinstance(param, Choice):
                how: Any = list(param.values)
                span = len(param.values)
            else:
                log = bool(param.log) and param.low > 0
                lo, hi = (math.log(param.low), math.log(param.high)) if log else (param.low,
                                                                                  param.high)
                how = (lo, hi, log, bool(d.requires))
                span = 1 + bool(d.requires)  # the value, and whether it is active
            self.columns.append((width, how))
            width += span
        self.width = width

    def arch(self, space: Space, arch: Arch) -> list[float]:
        return self.flat(space.encode(arch))

    def flat(self, flat: Flat) -> list[float]:
        """Encode a flat config; decisions missing from it or inactive in it stay zero."""
        row = [0.0] * self.width
        for d, (start, how) in zip(self.decisions, self.columns, strict=True):
            if d.key not in flat or not d.active(flat):
                continue
            value = flat[d.key]
            if isinstance(how, list):  # one-hot; ``1 == True``, so the type must match too
                index = next(i for i, v in enumerate(how)
                             if v == value and type(v) is type(value))
                row[start + index] = 1.0
            else:
                lo, hi, log, conditional = how
                x = math.log(value) if log else float(value)
                row[start] = (x - lo) / (hi - lo) if hi > lo else 0.0
                if conditional:
                    row[start + 1] = 1.0
        return row


class Ensemble:
    """``members`` MLPs ``width -> hidden -> hidden -> 1`` held as one model: the first layer
    of all members is one matrix (they read the same input), the other two are block-diagonal
    matrices (a fixed 0/1 mask keeps the members apart). A training step is three small matrix
    products whatever the number of members, and no batched kernel. ``predict(x)`` is
    ``(members, len(x))``, in reward units.
    """

    def __init__(self, width: int, *, members: int = 5, hidden: int = 32,
                 generator: torch.Generator | None = None) -> None:
        self.members = members
        wide = members * hidden

        def uniform(shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
            return (torch.rand(shape, generator=generator) * 2 - 1) / math.sqrt(fan_in)

        # As nn.Linear initialises: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        self.params = [uniform((width, wide), width), uniform((wide,), width),
                       uniform((wide, wide), hidden), uniform((wide,), hidden),
                       uniform((wide, members), hidden), uniform((members,), hidden)]
        self.masks = (torch.block_diag(*[torch.ones(hidden, hidden)] * members),
                      torch.block_diag(*[torch.ones(hidden, 1)] * members))
        self.mean, self.scale = 0.0, 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w1, b1, w2, b2, w3, b3 = self.params
        h = torch.relu(torch.addmm(b1, x, w1))
        h = torch.relu(torch.addmm(b2, h, w2 * self.masks[0]))
        return torch.addmm(b3, h, w3 * self.masks[1]).T  # standardised units

    def fit(self, x: torch.Tensor, y: torch.Tensor, *, steps: int = 100, lr: float = 0.01,
            generator: torch.Generator | None = None) -> Ensemble:
        self.mean = float(y.mean())
        self.scale = float(y.std()) if len(y) > 1 and float(y.std()) > 1e-12 else 1.0
        target = (y - self.mean) / self.scale
        # A bootstrap weighting per member (Poisson(1) counts), so the members disagree where
        # the data say little: the spread is what Thompson sampling draws from.
        weights = torch.poisson(torch.ones(self.members, len(y)), generator=generator)
        weights = weights / weights.sum(1, keepdim=True).clamp(min=1.0)
        for p in self.params:
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(self.params, lr=lr, fused=True)
        with one_thread():
            for _ in range(steps):
                loss = (weights * (self.forward(x) - target) ** 2).sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        self.params = [p.detach() for p in self.params]
        return self

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), one_thread():
            return self.forward(x) * self.scale + self.mean


class PredictorSearcher(SpaceSearcher):
    """A ``SpaceSearcher`` with a neural predictor of the reward.

    ``results`` maps an architecture's hash to ``(arch, reward)`` (``Dedup`` may report one
    twice); ``proposed`` holds every hash proposed so far (running, done or failed), which is
    never proposed again. ``model()`` is the ensemble fitted on all results, refit only when
    they changed, or None while fewer than ``min_data`` have arrived. Subclasses write
    ``next_arch()``.
    """

    def __init__(self, space: Space, metric: str | None = None, mode: str | None = None, *,
                 min_data: int = 8, members: int = 5, hidden: int = 32, steps: int = 100,
                 lr: float = 0.01, seed: int = 0) -> None:
        super().__init__(space, metric, mode, seed)
        self.seed = seed
        self.encoder = Encoder(space)
        self.min_data = max(2, min_data)
        self.ensemble_args = {"members": members, "hidden": hidden}
        self.fit_args = {"steps": steps, "lr": lr}
        self.results: dict[str, tuple[Arch, float]] = {}
        self.proposed: set[str] = set()
        self.ensemble: Ensemble | None = None
        self.fitted_on = 0  # how many results the ensemble was fitted on

    # --- SpaceSearcher ------------------------------------------------------------------------
    def propose(self) -> Arch:
        arch = self.next_arch()
        self.proposed.add(arch_hash(arch))
        return arch

    def next_arch(self) -> Arch:
        raise NotImplementedError

    def learn(self, trial_id: str, arch: Arch, reward: float) -> None:
        self.results[arch_hash(arch)] = (arch, reward)

    # --- for subclasses -------------------------------------------------------------------
    def model(self) -> Ensemble | None:
        if len(self.results) < self.min_data:
            return None
        if self.ensemble is None or self.fitted_on != len(self.results):
            archs = [a for a, _ in self.results.values()]
            y = torch.tensor([r for _, r in self.results.values()], dtype=torch.float32)
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + len(archs))
            self.ensemble = Ensemble(self.encoder.width, generator=generator,
                                     **self.ensemble_args).fit(self.features(archs), y,
                                                               generator=generator,
                                                               **self.fit_args)
            self.fitted_on = len(self.results)
        return self.ensemble

    def features(self, archs: list[Arch]) -> torch.Tensor:
        rows = [self.encoder.arch(self.space, a) for a in archs]
        return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), self.encoder.width)

    def best(self, k: int = 1) -> list[Arch]:
        """The ``k`` architectures with the highest rewards so far (ties: the earlier first)."""
        ranked = sorted(self.results.values(), key=lambda item: -item[1])
        return [a for a, _ in ranked[:k]]

    def unseen_sample(self, tries: int = 100) -> Arch:
        """A random architecture not proposed before (any one after ``tries`` draws: ``Dedup``
        answers a repeat from its record)."""
        arch = self.space.sample(self.rng)
        for _ in range(tries - 1):
            if arch_hash(arch) not in self.proposed:
                break
            arch = self.space.sample(self.rng)
        return arch


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def thompson(rng: random.Random, samples: torch.Tensor) -> list[float]:
    """Independent Thompson sampling (White et al. 2021, ITS): per candidate, one draw from the
    Gaussian with the ensemble's mean and standard deviation there. ``samples`` is
    ``(members, candidates)``."""
    mean = samples.mean(0).tolist()
    std = samples.std(0).tolist() if len(samples) > 1 else [0.0] * len(mean)
    return [m + s * rng.gauss(0.0, 1.0) for m, s in zip(mean, std, strict=True)]
