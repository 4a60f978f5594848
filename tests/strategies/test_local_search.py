"""Local search (``local_search``) and the evolution strategy's tournament and random start,
driven through the Tune ``Searcher`` interface (no Ray needed, except for the contract)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from raynas import strategies
from raynas.estimation import load_space
from raynas.space import arch_hash
from raynas.strategies.base import StrategyContext
from raynas.strategies.evolution import RegularizedEvolution
from raynas.strategies.local_search import LocalSearch, neighbours
from raynas.testing import check_strategy

CELL = load_space("nb201_cell")
SMALL = load_space("small_cnn")


def differing(a, b) -> int:
    """How many decisions two architectures of CELL differ in."""
    fa, fb = CELL.encode(a), CELL.encode(b)
    return sum(fa[k] != fb[k] for k in fa)


def climb(searcher, score, trials: int) -> list:
    """One worker: suggest, score, complete; the architectures in order."""
    archs = []
    for i in range(trials):
        arch = CELL.decode(searcher.suggest(f"t{i}"))
        archs.append(arch)
        searcher.on_trial_complete(f"t{i}", {"val_accuracy": score(arch)})
    return archs


def test_local_search_keeps_the_contract(ray_local):
    check_strategy("local_search")
    check_strategy("local_search", options={"num_init": "1"})


def test_the_neighbourhood_is_every_one_decision_change():
    arch = CELL.sample(random.Random(0))
    found = list(neighbours(CELL, arch, random.Random(0)))
    # NAS-Bench-201: 6 edges, each to one of the 4 other ops.
    assert len(found) == 24 and len({arch_hash(a) for a in found}) == 24
    assert all(differing(arch, n) == 1 for n in found)


def test_a_repeat_count_neighbour_adds_or_removes_one_copy():
    arch = SMALL.sample(random.Random(3))
    sizes = Counter(len(n["layers"]) - len(arch["layers"])
                    for n in neighbours(SMALL, arch, random.Random(0)))
    assert set(sizes) <= {-1, 0, 1} and sizes[0] > 0
    assert sizes[-1] + sizes[1] >= 1  # small_cnn has 1..2 layers: one of the two is possible


def test_it_climbs_to_the_optimum_one_neighbourhood_at_a_time():
    target = CELL.sample(random.Random(42))

    def score(arch):  # one peak: the share of edges that match the target
        return 1 - differing(arch, target) / 6

    searcher = LocalSearch(CELL, "val_accuracy", "max", num_init=1, seed=0)
    archs = climb(searcher, score, 6 * 24 + 1)
    hit = next(i for i, a in enumerate(archs) if arch_hash(a) == arch_hash(target))
    # Every move gains one matching edge: at most 6 neighbourhoods of 24 after the start.
    assert hit <= 6 * 24
    # After the start, every proposal is a neighbour of an architecture evaluated before it.
    for i, arch in enumerate(archs[1: hit + 1], start=1):
        assert any(differing(arch, earlier) == 1 for earlier in archs[:i]), i


def test_it_restarts_from_a_random_architecture_at_a_local_optimum():
    searcher = LocalSearch(CELL, "val_accuracy", "max", num_init=1, seed=1)
    archs = climb(searcher, lambda arch: 0.5, 26)  # flat: the start is a local optimum
    start = archs[0]
    assert all(differing(start, a) == 1 for a in archs[1:25])
    assert searcher.optima == [arch_hash(start)]
    assert differing(start, archs[25]) > 1  # the restart: a random cell


def test_given_points_are_its_random_starts():
    rng = random.Random(5)
    given = [CELL.sample(rng) for _ in range(10)]
    searcher = LocalSearch(CELL, "val_accuracy", "max", num_init=10, seed=0)
    for i, arch in enumerate(given):
        searcher.add_evaluated_point(CELL.encode(arch), i / 10)
    first = CELL.decode(searcher.suggest("t0"))
    assert differing(first, given[-1]) == 1  # a neighbour of the best given point


def test_the_strategy_takes_num_init_and_refuses_a_bad_one():
    from raynas.errors import ConfigError

    options = strategies.get("local_search").parse_options({"num_init": "3"})
    ctx = StrategyContext.of(CELL, [("val_accuracy", "max")], seed=0, num_trials=10,
                             concurrency=1, options=options)
    searcher = strategies.get("local_search").build(ctx).searcher.searcher.searcher
    assert searcher.num_init == 3
    with pytest.raises(ConfigError, match="^--strategy-option num_init: must be >= 1"):
        strategies.get("local_search").parse_options({"num_init": "0"})


# --- evolution ------------------------------------------------------------------------------
def test_evolution_tournaments_draw_with_replacement():
    """Population of three, tournaments of three: without replacement the best always wins;
    with replacement it is missed with probability (2/3)^3 = 0.296."""
    evo = RegularizedEvolution(CELL, "val_accuracy", "max", population_size=3, sample_size=3,
                               seed=0)
    archs = [CELL.sample(random.Random(s)) for s in range(3)]
    for i, arch in enumerate(archs):
        evo.add_evaluated_point(CELL.encode(arch), i / 10)
    missed = sum(evo._tournament() != archs[2] for _ in range(4000)) / 4000
    assert missed == pytest.approx(8 / 27, abs=0.03)


def test_evolution_counts_given_points_toward_its_random_start(monkeypatch):
    evo = RegularizedEvolution(CELL, "val_accuracy", "max", population_size=4, sample_size=2,
                               seed=0)
    rng = random.Random(9)
    given = [CELL.sample(rng) for _ in range(4)]
    for i, arch in enumerate(given):
        evo.add_evaluated_point(CELL.encode(arch), i / 10)

    def no_sampling(rng):
        raise AssertionError("a random architecture after a full population was given")

    monkeypatch.setattr(evo.space, "sample", no_sampling)
    for i in range(3):
        child = CELL.decode(evo.suggest(f"t{i}"))
        assert min(differing(child, parent) for parent in given) == 1
        evo.on_trial_complete(f"t{i}", {"val_accuracy": 0.0})


def test_evolution_options_set_population_and_tournament():
    options = strategies.get("evolution").parse_options({"population": "10",
                                                         "sample_size": "3"})
    ctx = StrategyContext.of(CELL, [("val_accuracy", "max")], seed=0, num_trials=100,
                             concurrency=1, options=options)
    evo = strategies.get("evolution").build(ctx).searcher.searcher.searcher
    assert (evo.population_size, evo.sample_size) == (10, 3)
    default = strategies.get("evolution").build(
        StrategyContext.of(CELL, [("val_accuracy", "max")], seed=0, num_trials=100,
                           concurrency=1)).searcher.searcher.searcher
    assert (default.population_size, default.sample_size) == (20, 5)
