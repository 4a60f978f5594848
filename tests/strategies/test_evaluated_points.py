"""Earlier results fed to a search (``add_evaluated_point``, which Tune calls for
``points_to_evaluate`` with ``evaluated_rewards``), modelled on Ray Tune's own searcher tests:
each kind of searcher learns them, and Dedup never trains such an architecture again."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
from optuna.trial import TrialState

from raynas import strategies
from raynas.estimation import load_space
from raynas.space import arch_hash
from raynas.strategies.base import StrategyContext
from raynas.testing import ContractError, check_strategy

SPACE = "small_cnn"


def chain(name: str):
    ctx = StrategyContext.of(load_space(SPACE), [("val_accuracy", "max")], seed=0,
                             num_trials=12, concurrency=1, max_budget=2)
    return strategies.get(name).build(ctx).searcher


def inner(searcher):
    """The strategy's own searcher, under ConcurrencyLimiter and Dedup."""
    return searcher.searcher.searcher


def points(count: int = 3):
    space, rng = load_space(SPACE), random.Random(7)
    return [space.sample(rng) for _ in range(count)]


def give(searcher, archs, values=(0.9, 0.5, math.nan), errors=(False, True, False)):
    space = load_space(SPACE)
    for arch, value, error in zip(archs, values, errors, strict=True):
        searcher.add_evaluated_point(space.encode(arch), value, error=error)


def test_optuna_strategies_take_points_on_their_define_by_run_space():
    searcher = chain("tpe")
    archs = points()
    give(searcher, archs)
    trials = inner(searcher)._ot_study.get_trials()
    # The success as a result; the failure and the NaN as failed trials (as Study.tell does).
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]
    assert trials[0].value == 0.9
    assert load_space(SPACE).decode(trials[0].params) == archs[0]


def test_evolution_adds_a_given_result_to_its_population():
    searcher = chain("evolution")
    archs = points()
    give(searcher, archs)
    assert list(inner(searcher).population) == [(archs[0], 0.9)]


def test_reinforce_learns_a_given_result_from_the_actions_that_would_propose_it():
    searcher = chain("rl")
    controller = inner(searcher)
    archs = points()
    give(searcher, archs)
    (actions, _), = controller.batch  # the success only
    flat = {controller.decisions[t].key: controller.options[t][a] for t, a in actions}
    assert controller.space.decode(flat) == archs[0]
    assert controller.actions == {}  # nothing left behind for the failed points


def test_predictors_train_on_given_results():
    searcher = chain("bananas")
    archs = points()
    give(searcher, archs)
    assert inner(searcher).results == {arch_hash(archs[0]): (archs[0], 0.9)}


def test_dedup_answers_a_given_architecture_from_its_result():
    space = load_space("nb201_small")  # 27 cells: random search soon proposes it again
    ctx = StrategyContext.of(space, [("val_accuracy", "max")], seed=0, num_trials=27,
                             concurrency=1, max_budget=2)
    searcher = strategies.get("random").build(ctx).searcher
    given = space.sample(random.Random(7))
    searcher.add_evaluated_point(space.encode(given), 0.9)
    dedup, seen = searcher.searcher, set()
    for i in range(26):  # every other cell once, then the search is exhausted
        config = searcher.suggest(f"t{i}")
        seen.add(arch_hash(space.decode(config)))
        searcher.on_trial_complete(f"t{i}", {"val_accuracy": 0.5, "budget": 1})
    assert arch_hash(given) not in seen and len(seen) == 26
    assert {"arch_hash": arch_hash(given), "trial_id": None} in dedup.reused


def test_the_contract_catches_a_searcher_that_cannot_take_points():
    """Ray's own OptunaSearch refuses points on a define-by-run space (TypeError)."""
    from ray.tune.search.optuna import OptunaSearch

    tpe = strategies.get("tpe")

    def build(ctx):
        plan = tpe.build(ctx)
        ours = inner(plan.searcher)
        plan.searcher.searcher.searcher = OptunaSearch(
            space=ours._space, metric=ctx.metric, mode=ctx.mode, sampler=ours._sampler)
        return plan

    strategies.register(dataclasses.replace(tpe, name="stock_optuna", build=build))
    try:
        with pytest.raises(ContractError, match="add_evaluated_point with a result raised "
                                                "TypeError"):
            check_strategy("stock_optuna")
    finally:
        del strategies.STRATEGIES["stock_optuna"]
