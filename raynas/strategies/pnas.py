"""Progressive NAS (Liu et al., ECCV 2018) as a Tune ``Searcher``: grow architectures one block
at a time, and at each size evaluate only the ``beam_width`` candidates a surrogate ranks best.

**Blocks.** PNAS grows a cell by one block (two inputs, two ops, a combination) per step. Here a
*unit* is what one step decides, read off the space's decisions so it works on every space:

- a copy of a repeated block (a macro space's layer ``layers.i``, with everything inside it):
  the architecture at step ``b`` has the layers decided so far (at least the repeat's minimum),
  so the search grows the network one layer at a time, as PNAS grows a cell;
- otherwise, the decisions under one parent: a group of unlike decisions is one unit (a DARTS
  node: its input pair and its two ops, PNAS's block; a ``train`` group), a group of like ones
  (the same choice, as a cell's edges are) one unit per decision, and so is a group of more
  than ``max_unit`` combinations. NAS-Bench-201's cell is six like edges, so each edge is a
  unit: such a cell has no size to grow, and the progression is over how many edges are
  *decided*. An undecided decision keeps its value in a *reference* architecture rather than a
  made-up "absent" value (an NB201 or DARTS cell with its later edges all ``none`` outputs
  zeros, and would teach the surrogate nothing).

**The search.** Start with the reference (a random architecture) and an empty beam. At each
step, the candidates are every beam member extended by every value of the next unit (at most
``max_candidates``, drawn at random beyond that); the surrogate, an ensemble of MLPs on the
space's decision encoding (``raynas.strategies.predictor``) refit on all results so far, ranks
them by its mean prediction (an evaluated candidate by its real reward); the ``beam_width``
best are the next beam and the best ``beam_width`` not yet proposed are proposed for real, in
rank order. Before ``min_data`` results the ranking is random. After the last unit a pass ends
and the next starts with the best architecture so far as the reference, keeping the surrogate's
data: PNAS itself stops at the largest cell; a Tune search runs for its budget.

Asynchronous: a step needs only the results that have arrived (a still-running candidate is
ranked by its prediction), so any number of trials may run at once; one at a time, it is PNAS.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from raynas.space import Arch, Decision, Space, arch_hash
from raynas.space.nodes import FloatRange, size
from raynas.strategies.predictor import Flat, PredictorSearcher
from raynas.strategies.rl import decision_options


def units(space: Space, max_unit: int = 1000) -> tuple[list[tuple[list[Decision], str | None]],
                                                       dict[str, int]]:
    """The space's units in order, each ``(decisions, repeat count key or None)``, and the
    minimum of every top-level repeat count (whose value follows from the units decided)."""
    decisions = space.decisions()
    counts = {d.key: d.param.low for d in decisions
              if not d.requires and any(o.requires and o.requires[0][0] == d.key
                                        for o in decisions)}
    groups: dict[tuple[str, Any], list[Decision]] = {}
    for d in decisions:
        if d.key in counts:
            continue
        # A copy of a repeat: its outermost (count, index); else the parent path.
        group = d.requires[0] if d.requires else (d.key.rpartition(".")[0], None)
        groups.setdefault(group, []).append(d)
    out: list[tuple[list[Decision], str | None]] = []
    for (key, index), members in groups.items():
        if index is not None:
            out.append((members, key))
        elif len(members) > 1 and (len({d.param for d in members}) == 1
                                   or _combinations(members) > max_unit):
            out += [([d], None) for d in members]  # like decisions (edges), or too many
        else:
            out.append((members, None))
    return out, counts


def _combinations(decisions: list[Decision]) -> float:
    return math.prod(len(decision_options(d)) if isinstance(d.param, FloatRange)
                     else size(d.param) for d in decisions)


class ProgressiveSearch(PredictorSearcher):
    """PNAS over ``units(space)``; see the module's docstring. ``beam_width`` is PNAS's K."""

    def __init__(self, space: Space, metric: str | None = None, mode: str | None = None, *,
                 beam_width: int = 8, max_candidates: int = 1000, max_unit: int = 1000,
                 min_data: int = 8, members: int = 5, hidden: int = 32, steps: int = 100,
                 lr: float = 0.01, seed: int = 0) -> None:
        super().__init__(space, metric, mode, min_data=min_data, members=members,
                         hidden=hidden, steps=steps, lr=lr, seed=seed)
        self.units, self.counts = units(space, max_unit)
        self.beam_width = beam_width
        self.max_candidates = max_candidates
        self.max_unit = max_unit
        self.reference: Flat = space.encode(space.sample(self.rng))
        self.level = 0  # units decided in the current beam
        self.beam: list[list[Flat]] = [[]]  # each member: the values of units 0..level-1
        self.queue: list[Arch] = []
        self.passes = 0

    def next_arch(self) -> Arch:
        for _ in range(2 * len(self.units) + 2):
            while self.queue:
                arch = self.queue.pop(0)
                if arch_hash(arch) not in self.proposed:
                    return arch
            self._step()
        return self.unseen_sample()  # nothing new in a whole pass (a tiny space)

    def build(self, prefix: list[Flat]) -> Arch:
        """The architecture of a beam member: its decided units over the reference, each
        top-level repeat as long as the copies decided (at least its minimum)."""
        flat = dict(self.reference)
        decided = dict.fromkeys(self.counts, 0)
        for (_, count), values in zip(self.units, prefix, strict=False):
            flat.update(values)
            if count is not None:
                decided[count] += 1
        for count, low in self.counts.items():
            flat[count] = max(low, decided[count])
        return self.space.decode(flat)

    def _step(self) -> None:
        if self.level >= len(self.units):  # a pass is over: the next grows from the best
            self.passes += 1
            best = self.best(1)
            if best:
                self.reference = self.space.encode(best[0])
            self.level, self.beam = 0, [[]]
            if not self.units:
                return
        values = self._values(self.units[self.level][0])
        pairs = list(itertools.product(range(len(self.beam)), range(len(values))))
        if len(pairs) > self.max_candidates:
            pairs = self.rng.sample(pairs, self.max_candidates)
        prefixes, archs, seen = [], [], set()
        for member, value in pairs:
            prefix = [*self.beam[member], values[value]]
            arch = self.build(prefix)
            digest = arch_hash(arch)
            if digest not in seen:
                seen.add(digest)
                prefixes.append(prefix)
                archs.append(arch)
        order = sorted(range(len(archs)), key=self._scores(archs).__getitem__, reverse=True)
        self.beam = [prefixes[i] for i in order[: self.beam_width]]
        fresh = [archs[i] for i in order if arch_hash(archs[i]) not in self.proposed]
        self.queue = fresh[: self.beam_width]
        self.level += 1

    def _scores(self, archs: list[Arch]) -> list[float]:
        model = self.model()
        if model is None:
            return [self.rng.random() for _ in archs]
        predicted = model.predict(self.features(archs)).mean(0).tolist()
        known = [self.results.get(arch_hash(a)) for a in archs]
        return [p if k is None else k[1] for p, k in zip(predicted, known, strict=True)]

    def _values(self, decisions: list[Decision]) -> list[Flat]:
        """Every combination of the unit's values (floats on ``decision_options``' grid), or
        ``max_unit`` random ones when there are more."""
        if _combinations(decisions) <= self.max_unit:
            options = [decision_options(d) for d in decisions]
            return [dict(zip([d.key for d in decisions], combo, strict=True))
                    for combo in itertools.product(*options)]
        return [{d.key: (self.rng.choice(decision_options(d)) if isinstance(d.param, FloatRange)
                         else d.param.sample(self.rng)) for d in decisions}
                for _ in range(self.max_unit)]
