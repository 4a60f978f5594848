"""The registries: every strategy keeps the contract, every strategy x scheduler x objectives
combination the registries allow builds a Tuner (which pickles its state), every other one is
refused at validation with one line, and a third party's strategy plugs in."""

from __future__ import annotations

import dataclasses

import pytest

from raynas import schedulers, strategies
from raynas.config import SearchConfig
from raynas.errors import ConfigError
from raynas.estimation import load_space
from raynas.experiment.resolve import check_combination, combinations, resolve
from raynas.experiment.tuner import build_tuner, plan_search
from raynas.strategies.base import StrategyContext
from raynas.testing import ContractError, check_strategy

ALLOWED = combinations()
DISALLOWED = [(s, c, n) for s in strategies.STRATEGIES for c in schedulers.SCHEDULERS
              for n in (1, 2) if (s, c, n) not in ALLOWED]


@pytest.mark.parametrize("name", list(strategies.STRATEGIES))
def test_every_registered_strategy_keeps_the_contract(name, ray_local):
    check_strategy(name)


def test_the_contract_catches_a_searcher_that_tune_cannot_save():
    """The check behind issue 20: a searcher holding a lock breaks the contract."""
    import threading

    random = strategies.get("random")

    def build(ctx):
        plan = random.build(ctx)
        plan.searcher.lock = threading.Lock()
        return plan

    strategies.register(dataclasses.replace(random, name="locked", build=build))
    try:
        with pytest.raises(ContractError, match="does not pickle"):
            check_strategy("locked")
    finally:
        del strategies.STRATEGIES["locked"]


def test_the_registries_allow_what_they_can_run():
    assert ("nsga2", "asha", 2) in ALLOWED  # issue 20's combination
    assert ("evolution", "mo-asha", 2) in ALLOWED and ("tpe", "mo-asha", 2) not in ALLOWED
    assert ("random", "pbt", 1) in ALLOWED and ("tpe", "pbt", 1) not in ALLOWED
    assert all(n == 2 for _, c, n in ALLOWED if c == "mo-asha")


@pytest.mark.parametrize("strategy,scheduler,objectives", ALLOWED)
def test_every_allowed_combination_builds_a_tuner_that_saves_its_state(
        strategy, scheduler, objectives, tmp_path, ray_local):
    """``tune.Tuner`` pickles its state (searcher, scheduler) into the experiment folder when
    it is built: before issue 20's fix, nsga2 under asha died right there."""
    space = load_space("fixed_cnn" if scheduler == "pbt" else "small_cnn")
    metric, mode = (["val_accuracy", "params"], ["max", "min"]) if objectives == 2 else (
        "val_accuracy", "max")
    data = None
    if strategies.get(strategy).needs_dataset:
        from raynas.data import load_dataset

        data = load_dataset("digits")
    from raynas.strategies.zero_cost import ZeroCostSettings

    ctx = StrategyContext(space, metric, mode, 0, 4, 2, 4, scheduler, data=data,
                          zero_cost=ZeroCostSettings(candidates=8, top_k=4))
    plan, scheduler_obj = plan_search(strategies.get(strategy), schedulers.get(scheduler), ctx)
    tuner = build_tuner(lambda config: None, plan, scheduler_obj, metric="val_accuracy",
                        mode="max", storage=str(tmp_path), name="combo")
    assert (tmp_path / "combo" / "tuner.pkl").is_file() and tuner is not None


@pytest.mark.parametrize("strategy,scheduler,objectives", DISALLOWED)
def test_every_other_combination_is_refused_in_one_line(strategy, scheduler, objectives):
    with pytest.raises(ConfigError) as caught:
        check_combination(strategies.get(strategy), schedulers.get(scheduler), objectives)
    assert "\n" not in str(caught.value) and str(caught.value).startswith("--")


def test_a_refused_combination_stops_before_anything_loads():
    with pytest.raises(ConfigError, match=r"^--scheduler pbt: brings its own population"):
        resolve(SearchConfig(strategy="tpe", scheduler="pbt", space="fixed_cnn"))


def test_a_registered_strategy_is_checked_like_the_built_in_ones(ray_local):
    """A third party's strategy: usable by name at once, validated by its capabilities."""
    tpe = strategies.get("tpe")
    mine = strategies.register(dataclasses.replace(tpe, name="my_tpe", steers_by_first=True))
    try:
        check_strategy("my_tpe")
        assert ("my_tpe", "mo-asha", 2) in combinations()
        resolved = resolve(SearchConfig(strategy="my_tpe", num_trials=2))
        assert resolved.strategy is mine
        with pytest.raises(ConfigError, match="did you mean 'my_tpe'"):
            strategies.get("my_tep")
    finally:
        del strategies.STRATEGIES["my_tpe"]
