"""Strategy and scheduler registries: a name -> a configured Ray Tune searcher or scheduler.

A strategy decides *which* architectures to try (a Tune ``Searcher``); a scheduler decides how
long each one trains (a Tune ``TrialScheduler``). Both are plain Tune objects, so they work under
``ConcurrencyLimiter``, on a cluster and with Tune's fault tolerance unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raynas.errors import ConfigError, did_you_mean
from raynas.space import Space

DEFAULT_NUM_TRIALS = 20


@dataclass(frozen=True)
class Plan:
    """What the Tuner needs from a strategy: a searcher (or None for Tune's variant generator),
    the param space it expects, and how many trials to run."""

    searcher: Any
    param_space: dict[str, Any]
    num_trials: int


@dataclass(frozen=True)
class StrategyContext:
    space: Space
    metric: str
    mode: str
    seed: int
    num_trials: int | None
    concurrency: int


def _random(ctx: StrategyContext) -> Plan:
    from ray.tune.search.basic_variant import BasicVariantGenerator

    searcher = BasicVariantGenerator(random_state=ctx.seed, max_concurrent=ctx.concurrency)
    return Plan(searcher, ctx.space.to_tune(), ctx.num_trials or DEFAULT_NUM_TRIALS)


def _grid(ctx: StrategyContext) -> Plan:
    """Every architecture of a finite space once (``--num-trials`` caps it), in a fixed order.

    Tune's ``grid_search`` takes the product of independent parameters, which would repeat the
    same architecture for every value of an inactive (conditional) decision; the space's own
    enumeration has no such duplicates, so it is fed to Tune as the points to evaluate.
    """
    from ray.tune.search.basic_variant import BasicVariantGenerator

    points = [ctx.space.encode(a) for a in ctx.space.grid()]
    if ctx.num_trials:
        points = points[: ctx.num_trials]
    searcher = BasicVariantGenerator(points_to_evaluate=points, max_concurrent=ctx.concurrency)
    return Plan(searcher, {}, len(points))


def _optuna(sampler_factory: Callable[[int], Any]) -> Callable[[StrategyContext], Plan]:
    def make(ctx: StrategyContext) -> Plan:
        import optuna
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        searcher = OptunaSearch(space=ctx.space.optuna_define_by_run, metric=ctx.metric,
                                mode=ctx.mode, sampler=sampler_factory(ctx.seed))
        return Plan(ConcurrencyLimiter(searcher, max_concurrent=ctx.concurrency), {},
                    ctx.num_trials or DEFAULT_NUM_TRIALS)

    return make


def _tpe_sampler(seed: int) -> Any:
    import warnings

    import optuna

    # multivariate + group: TPE models decisions jointly and handles the conditional (repeat)
    # structure by grouping trials that share the same active decisions.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                          n_startup_trials=6)


STRATEGIES: dict[str, tuple[Callable[[StrategyContext], Plan], str]] = {
    "random": (_random, "random search (Tune's variant generator)"),
    "grid": (_grid, "every architecture of a finite space once"),
    "tpe": (_optuna(_tpe_sampler), "Bayesian: Optuna's TPE, define-by-run conditionals"),
}


# Schedulers get metric and mode from ``TuneConfig`` (Tune refuses them in both places).
def _fifo(max_epochs: int) -> Any:
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def _asha(max_epochs: int) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", max_t=max_epochs, grace_period=1,
                         reduction_factor=3)


SCHEDULERS: dict[str, tuple[Callable[[int], Any], str]] = {
    "fifo": (_fifo, "train every trial for --max-epochs"),
    "asha": (_asha, "asynchronous successive halving: stop the weakest early (Li et al. 2020)"),
}


def check_names(strategy: str, scheduler: str) -> None:
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy: unknown strategy {strategy!r}"
                          f"{did_you_mean(strategy, STRATEGIES)}; known: {', '.join(STRATEGIES)}")
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"--scheduler: unknown scheduler {scheduler!r}"
                          f"{did_you_mean(scheduler, SCHEDULERS)}; known: {', '.join(SCHEDULERS)}")


def make_plan(strategy: str, ctx: StrategyContext) -> Plan:
    return STRATEGIES[strategy][0](ctx)


def make_scheduler(name: str, max_epochs: int) -> Any:
    return SCHEDULERS[name][0](max_epochs)
