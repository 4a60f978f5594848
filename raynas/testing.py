"""A contract suite for strategies, in the spirit of scikit-learn's ``check_estimator``: what
every registered strategy must do for raynas and Ray Tune to run it. A third party that
``register``s a strategy runs ``check_strategy("name")`` in its own tests.

The checks drive the strategy's searcher chain the way Tune does (``suggest`` /
``on_trial_complete``), without a cluster: proposals decode into valid architectures, NaN and
infinite results and failed trials are taken, the chain pickles (Tune keeps it in the
experiment state), and a chain saved with a trial still running and restored into a fresh one
proposes what the uninterrupted chain proposes. Needs a running Ray only for strategies that
score candidates in Ray tasks (``zero_cost``).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from typing import Any

from raynas import strategies
from raynas.config import TIME_ATTR
from raynas.data import load_dataset
from raynas.errors import RaynasError
from raynas.estimation import load_space
from raynas.space import Space
from raynas.strategies.base import Plan, StrategyContext

SPACE = "small_cnn"


class ContractError(RaynasError):
    """A strategy breaks the contract: the message names the strategy and the check."""


def check_strategy(name: str, space: str | Space = SPACE, trials: int = 10,
                   options: Mapping[str, Any] | None = None) -> None:
    """Run every check on strategy ``name`` (single-objective, and multi-objective if the
    strategy says it is) with its ``options`` (``--strategy-option`` KEY=VALUE pairs; unset:
    its defaults); raises ``ContractError`` naming the first broken one."""
    strategy = strategies.get(name)
    parsed = strategy.parse_options(options)
    space = load_space(space)
    data = load_dataset("digits") if strategy.needs_dataset else None
    objectives = [[("val_accuracy", "max")]]
    if strategy.multi_objective:
        objectives.append([("val_accuracy", "max"), ("params", "min")])
    for objective in objectives:
        def build(objective: list[tuple[str, str]] = objective) -> Plan:
            return strategy.build(StrategyContext.of(
                space, objective, seed=0, num_trials=trials, concurrency=2, max_budget=4,
                data=data, options=parsed))

        where = f"strategy {name!r} ({len(objective)} objective{'s' * (len(objective) > 1)})"
        _check_plan(build(), where)
        _check_pickles(build(), where)
        if _drivable(build()):
            _check_drive(build(), space, objective, trials, where)
            _check_restore(build, objective, where)
            _check_evaluated_points(build(), space, objective, trials, where)


def _check_plan(plan: Plan, where: str) -> None:
    if not isinstance(plan, Plan) or plan.num_trials < 1 or plan.searcher is None:
        raise ContractError(f"{where}: build(ctx) must return a Plan with a searcher and at "
                            f"least one trial, got {plan!r}")


def _check_pickles(plan: Plan, where: str) -> None:
    """Tune pickles the searcher (and a scheduler the strategy brings) into its state, with
    Ray's cloudpickle."""
    from ray import cloudpickle

    for part in (plan.searcher, plan.scheduler):
        try:
            cloudpickle.loads(cloudpickle.dumps(part))
        except Exception as exc:  # noqa: BLE001 - any failure breaks the contract
            raise ContractError(f"{where}: {type(part).__name__} does not pickle, so Tune "
                                f"cannot save the search ({type(exc).__name__}: {exc})") from None


def _drivable(plan: Plan) -> bool:
    """A ``Searcher`` chain; Tune's own variant generator (grid, zero_cost's top-k, DARTS's
    sweep) is driven by Tune and checked there."""
    from ray.tune.search import Searcher

    return isinstance(plan.searcher, Searcher)


def _result(objective: list[tuple[str, str]], i: int) -> dict[str, Any]:
    """Results as Tune delivers them, the odd ones included: NaN, infinities."""
    odd = {3: math.nan, 4: math.inf, 5: -math.inf}
    value = odd.get(i, 0.5 + 0.01 * i)
    return {TIME_ATTR: 1, **{m: value if m == "val_accuracy" else 1000 + i for m, _ in
                             objective}}


def _check_drive(plan: Plan, space: Space, objective: list[tuple[str, str]], trials: int,
                 where: str) -> None:
    from ray.tune.search import Searcher

    searcher = plan.searcher
    for i in range(trials):
        config = searcher.suggest(f"t{i}")
        if config is None or config == Searcher.FINISHED:
            break
        if plan.estimator is None:
            try:
                space.validate(space.decode(config))
            except RaynasError as exc:
                raise ContractError(f"{where}: proposal {i} is not an architecture of "
                                    f"{space.name!r}: {exc}") from None
        kind = {2: "a failed trial", 3: "NaN", 4: "inf", 5: "-inf"}.get(i, "a result")
        try:
            searcher.on_trial_complete(f"t{i}", result=None if i == 2 else _result(
                objective, i), error=i == 2)
        except Exception as exc:  # noqa: BLE001
            raise ContractError(f"{where}: on_trial_complete with {kind} raised "
                                f"{type(exc).__name__}: {exc}") from None


def _check_evaluated_points(plan: Plan, space: Space, objective: list[tuple[str, str]],
                            trials: int, where: str) -> None:
    """Earlier results, as Tune gives them for ``points_to_evaluate`` with
    ``evaluated_rewards``: a success, a failure and a NaN are taken, and an architecture given
    with a result is never proposed as a new trial."""
    import random

    from ray.tune.search import Searcher

    from raynas.space import arch_hash

    searcher, rng = plan.searcher, random.Random(1)
    given = [space.sample(rng) for _ in range(3)]
    for i, (arch, value) in enumerate(zip(given, (0.9, 0.0, math.nan), strict=True)):
        kind = ("a result", "a failed trial", "NaN")[i]
        values = value if len(objective) == 1 else [value, 1000.0]
        try:
            searcher.add_evaluated_point(space.encode(arch), values, error=i == 1)
        except Exception as exc:  # noqa: BLE001
            raise ContractError(f"{where}: add_evaluated_point with {kind} raised "
                                f"{type(exc).__name__}: {exc}") from None
    for i in range(trials):
        config = searcher.suggest(f"e{i}")
        if config is None or config == Searcher.FINISHED:
            break
        if plan.estimator is None and arch_hash(space.decode(config)) == arch_hash(given[0]):
            raise ContractError(f"{where}: proposed again, as a new trial, an architecture "
                                "that add_evaluated_point gave with its result")
        searcher.on_trial_complete(f"e{i}", _result(objective, i + 6))


def _check_restore(build: Any, objective: list[tuple[str, str]], where: str) -> None:
    """Saved with a trial still running, restored into a fresh chain: the same next
    proposals as the chain that was never interrupted."""
    from ray.tune.search import SearchGenerator

    def steps(searcher: Any, start: int, stop: int) -> list[Any]:
        out = []
        for i in range(start, stop):
            out.append(searcher.suggest(f"t{i}"))
            searcher.on_trial_complete(f"t{i}", _result(objective, i))
        return out

    whole, first = build().searcher, build().searcher
    steps(whole, 0, 4)
    steps(first, 0, 4)
    running = [whole.suggest("t4"), first.suggest("t4")]
    with tempfile.TemporaryDirectory() as folder:
        SearchGenerator(first).save_to_dir(folder, "s")
        restored = SearchGenerator(build().searcher)
        restored.restore_from_dir(folder)
    if running[0] != running[1]:
        raise ContractError(f"{where}: the same seed gave different proposals")
    for chain in (whole, restored.searcher):
        chain.on_trial_complete("t4", _result(objective, 4))
    expected, got = steps(whole, 5, 8), steps(restored.searcher, 5, 8)
    if expected != got:
        raise ContractError(f"{where}: a restored search proposes other architectures than "
                            "the uninterrupted one (its state is not all saved)")


__all__ = ["ContractError", "check_strategy"]
