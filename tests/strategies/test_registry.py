"""The registries: every strategy keeps the contract, every strategy x scheduler x objectives
combination the registries allow builds a Tuner (which pickles its state), every other one is
refused at validation with one line, and a third party's strategy plugs in, options and all."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from raynas import schedulers, strategies
from raynas.config import SearchConfig
from raynas.errors import ConfigError
from raynas.estimation import load_space
from raynas.experiment.resolve import check_combination, combinations, resolve
from raynas.experiment.tuner import build_tuner, plan_search
from raynas.strategies.base import NoOptions, Strategy, StrategyContext
from raynas.testing import ContractError, check_strategy

ALLOWED = combinations()
DISALLOWED = [(s, c, n) for s in strategies.STRATEGIES for c in schedulers.SCHEDULERS
              for n in (1, 2) if (s, c, n) not in ALLOWED]
#: Options that keep a strategy's checks fast (the defaults score 1,000 candidates).
LIGHT = {"zero_cost": {"candidates": "8", "top_k": "4"}}


@pytest.mark.parametrize("name", list(strategies.STRATEGIES))
def test_every_registered_strategy_keeps_the_contract(name, ray_local):
    check_strategy(name, options=LIGHT.get(name))


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
    ctx = StrategyContext(space, metric, mode, 0, 4, 2, 4, scheduler, data=data,
                          options=strategies.get(strategy).parse_options(LIGHT.get(strategy)))
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


@dataclass(frozen=True)
class Mine:
    """A third party's options: one of each type, and a check of its own."""

    population: int = field(default=4, metadata={"help": "architectures kept"})
    rate: float = 0.5
    elitist: bool = False
    label: str = "x"

    def __post_init__(self) -> None:
        if self.population < 2:
            raise ConfigError("--strategy-option population: must be >= 2")


@pytest.fixture
def mine():
    """``mine``: random search that keeps the options its context gave it."""
    random, seen = strategies.get("random"), []

    def build(ctx):
        seen.append(ctx.options)
        return random.build(dataclasses.replace(ctx, options=random.parse_options()))

    strategies.register(Strategy("mine", build, "random, with options", options=Mine))
    try:
        yield seen
    finally:
        del strategies.STRATEGIES["mine"]


def test_a_registered_strategy_gets_its_options_parsed_into_ctx_options(mine):
    resolved = resolve(SearchConfig(space="small_cnn", strategy="mine", strategy_options={
        "population": "6", "rate": "0.25", "elitist": "yes"}))
    assert resolved.options == Mine(population=6, rate=0.25, elitist=True)
    plan_search(resolved.strategy, resolved.scheduler, resolved.context())
    assert mine == [Mine(population=6, rate=0.25, elitist=True, label="x")]
    # From Python a typed value is taken as well; unset keys keep their defaults.
    assert strategies.get("mine").parse_options({"population": 3, "elitist": False}) == Mine(3)
    check_strategy("mine", options={"label": "checked"})
    assert mine[-1] == Mine(label="checked")
    # A context without options (a benchmark builds its own): the strategy's defaults.
    plan_search(strategies.get("mine"), schedulers.get("fifo"), StrategyContext.of(
        load_space("small_cnn"), [("val_accuracy", "max")], seed=0, num_trials=2,
        concurrency=1))
    assert mine[-1] == Mine()


@pytest.mark.parametrize(("given", "message"), [
    ({"populaton": "6"}, "--strategy-option populaton: not an option of --strategy mine (did "
                         "you mean 'population'?); known: population, rate, elitist, label"),
    ({"population": "six"}, "--strategy-option population=six: expected a whole number"),
    ({"rate": "fast"}, "--strategy-option rate=fast: expected a number"),
    ({"elitist": "maybe"}, "--strategy-option elitist=maybe: expected true or false"),
    ({"population": "1"}, "--strategy-option population: must be >= 2"),
])
def test_an_unknown_option_or_a_bad_value_is_one_line(mine, given, message):
    with pytest.raises(ConfigError) as raised:
        resolve(SearchConfig(space="small_cnn", strategy="mine", strategy_options=given))
    assert str(raised.value) == message


def test_a_strategy_without_options_refuses_one():
    with pytest.raises(ConfigError, match=r"^--strategy-option proxy: not an option of "
                                          r"--strategy tpe; it takes no options$"):
        resolve(SearchConfig(strategy="tpe", strategy_options={"proxy": "snip"}))
    assert strategies.get("tpe").parse_options() == NoOptions()


@dataclass
class Loose:
    size: int = 1


@dataclass(frozen=True)
class Required:
    size: int


@dataclass(frozen=True)
class Listed:
    sizes: list = field(default_factory=list)


@pytest.mark.parametrize(("options", "message"), [
    (Loose, "is not a frozen dataclass"), (Loose(), "is not a frozen dataclass"),
    (Required, "Required.size has no default"), (Listed, "Listed.sizes is a"),
])
def test_an_options_class_that_cannot_be_parsed_into_is_refused_at_registration(options,
                                                                              message):
    with pytest.raises(TypeError, match=message):
        Strategy("bad", strategies.get("random").build, "bad options", options=options)
