"""The strategy registry: a name -> a ``Strategy`` descriptor that builds a Ray Tune searcher
and says what it can do (several objectives, PBT, real data, ...), so the settings are checked
against capabilities, not lists of names. Third parties add their own with ``register``.

A strategy decides *which* architectures to try (a Tune ``Searcher``); the scheduler (see
``raynas.schedulers``) decides how long each one trains. Both are plain Tune objects, so they
work under ``ConcurrencyLimiter``, on a cluster and with Tune's fault tolerance unchanged. Every
searcher we build is wrapped in ``Dedup`` (an architecture is trained once per search) and a
``ConcurrencyLimiter``.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ray.tune.schedulers import HyperBandForBOHB, HyperBandScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.basic_variant import BasicVariantGenerator

from raynas.config import TIME_ATTR
from raynas.errors import ConfigError
from raynas.registry import Registry
from raynas.strategies import weight_sharing, zero_cost
from raynas.strategies.base import OPTION, Plan, Strategy, StrategyContext
from raynas.strategies.dedup import Dedup


def _limited(searcher: Any, ctx: StrategyContext) -> Any:
    return ConcurrencyLimiter(Dedup(searcher, ctx.space), max_concurrent=ctx.concurrency)


def _grid(ctx: StrategyContext) -> Plan:
    """Every architecture of a finite space once (``--num-trials`` caps it), in a fixed order.

    Tune's ``grid_search`` takes the product of independent parameters, which would repeat the
    same architecture for every value of an inactive (conditional) decision; the space's own
    enumeration has no such duplicates, so it is fed to Tune as the points to evaluate.
    """
    points = [ctx.space.encode(a) for a in ctx.space.grid()]
    if ctx.num_trials:
        points = points[: ctx.num_trials]
    searcher = BasicVariantGenerator(points_to_evaluate=points, max_concurrent=ctx.concurrency)
    # Tune needs every key of a preset point in the param space; the inactive ones it fills in
    # are ignored by ``Space.decode``.
    return Plan(searcher, ctx.space.to_tune(), len(points))


def _optuna(sampler_factory: Callable[[StrategyContext], Any]) -> Callable[[StrategyContext],
                                                                           Plan]:
    """A strategy from an Optuna sampler: ``OptunaSearch`` with the space's define-by-run
    function, so conditional decisions are suggested only when active."""

    def make(ctx: StrategyContext) -> Plan:
        import optuna

        from raynas.strategies.samplers import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = sampler_factory(ctx)
        searcher = OptunaSearch(space=ctx.space.optuna_define_by_run, metric=ctx.metric,
                                mode=ctx.mode, sampler=sampler)
        return Plan(_limited(searcher, ctx), {}, ctx.trials)

    return make


def _random_sampler(ctx: StrategyContext) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=ctx.seed)


def _tpe_sampler(ctx: StrategyContext) -> Any:
    import optuna

    # multivariate + group: TPE models decisions jointly and handles the conditional (repeat)
    # structure by grouping trials that share the same active decisions.
    return optuna.samplers.TPESampler(seed=ctx.seed, multivariate=True, group=True,
                                      n_startup_trials=6)


def _gp_sampler(ctx: StrategyContext) -> Any:
    import optuna

    # Decisions outside the intersection of all trials' spaces (layers that not every
    # architecture has) are drawn by the independent sampler; that is expected, not news.
    return optuna.samplers.GPSampler(seed=ctx.seed, n_startup_trials=min(10, ctx.trials // 3 + 1),
                                     warn_independent_sampling=False)


def _nsga2_sampler(ctx: StrategyContext) -> Any:
    from raynas.strategies.samplers import NSGAIISampler

    return NSGAIISampler(seed=ctx.seed,
                                         population_size=max(4, min(50, ctx.trials // 4)))


@dataclass(frozen=True)
class EvolutionOptions:
    """``--strategy-option`` of ``evolution``."""

    population: int = field(default=0, metadata={
        "help": "members of the population, also the random proposals it starts from (0: a "
                "quarter of the trials, between 4 and 20)"})
    sample_size: int = field(default=0, metadata={
        "help": "entrants of a tournament, drawn with replacement (0: a quarter of the "
                "population, at least 2)"})

    def __post_init__(self) -> None:
        if self.population < 0 or self.sample_size < 0:
            raise ConfigError(f"{OPTION} population, sample_size: must be >= 0 (0: automatic)")
        if self.population and self.population < 2:
            raise ConfigError(f"{OPTION} population: must be at least 2, got {self.population}")


def _evolution(ctx: StrategyContext) -> Plan:
    from raynas.strategies.evolution import RegularizedEvolution

    options: EvolutionOptions = ctx.options or EvolutionOptions()
    metric, mode = ctx.primary
    population = options.population or max(4, min(20, ctx.trials // 4))
    sample_size = options.sample_size or max(2, population // 4)
    searcher = RegularizedEvolution(ctx.space, metric, mode, population_size=population,
                                    sample_size=sample_size, seed=ctx.seed)
    return Plan(_limited(searcher, ctx), {}, ctx.trials)


@dataclass(frozen=True)
class LocalSearchOptions:
    """``--strategy-option`` of ``local_search``."""

    num_init: int = field(default=10, metadata={
        "help": "random architectures the first climb starts from, the best of them"})

    def __post_init__(self) -> None:
        if self.num_init < 1:
            raise ConfigError(f"{OPTION} num_init: must be >= 1, got {self.num_init}")


def _local_search(ctx: StrategyContext) -> Plan:
    from raynas.strategies.local_search import LocalSearch

    options: LocalSearchOptions = ctx.options or LocalSearchOptions()
    metric, mode = ctx.primary
    searcher = LocalSearch(ctx.space, metric, mode, num_init=options.num_init, seed=ctx.seed)
    return Plan(_limited(searcher, ctx), {}, ctx.trials)


def _rl(ctx: StrategyContext) -> Plan:
    from raynas.strategies.rl import ReinforceController

    metric, mode = ctx.primary
    searcher = ReinforceController(ctx.space, metric, mode, batch_size=max(2, ctx.concurrency),
                                   seed=ctx.seed)
    return Plan(_limited(searcher, ctx), {}, ctx.trials)


def _bananas(ctx: StrategyContext) -> Plan:
    from raynas.strategies.bananas import Bananas

    metric, mode = ctx.primary
    searcher = Bananas(ctx.space, metric, mode, num_init=max(4, min(10, ctx.trials // 5)),
                       seed=ctx.seed)
    return Plan(_limited(searcher, ctx), {}, ctx.trials)


def _pnas(ctx: StrategyContext) -> Plan:
    from raynas.strategies.pnas import ProgressiveSearch

    metric, mode = ctx.primary
    beam = max(4, min(8, ctx.trials // 6))
    searcher = ProgressiveSearch(ctx.space, metric, mode, beam_width=beam, min_data=beam,
                                 seed=ctx.seed)
    return Plan(_limited(searcher, ctx), {}, ctx.trials)


def bohb_engine() -> str:
    """Which BOHB runs here: Ray Tune's ``TuneBOHB`` needs ``hpbandster`` and ``ConfigSpace``."""
    found = all(importlib.util.find_spec(m) for m in ("hpbandster", "ConfigSpace"))
    return "tune-bohb" if found else "tpe-hyperband"


def _bohb(ctx: StrategyContext) -> Plan:
    """BOHB (Falkner et al. 2018): a model-based sampler whose trials Hyperband stops early.

    With ``hpbandster`` installed this is Ray Tune's own pair (``TuneBOHB`` + its
    ``HyperBandForBOHB``, which budgets by epochs); without it, Optuna's TPE with Tune's
    ``HyperBandScheduler`` - the same idea from maintained parts. ``notes`` says which ran.
    """
    metric, mode = ctx.primary
    engine = bohb_engine()
    if engine == "tpe-hyperband":
        plan = _optuna(_tpe_sampler)(ctx)
        scheduler = HyperBandScheduler(time_attr=TIME_ATTR, max_t=ctx.max_budget,
                                       reduction_factor=3)
        return Plan(plan.searcher, {}, plan.num_trials, scheduler, {"bohb_engine": engine})
    from ray.tune.search.bohb import TuneBOHB

    config_space = TuneBOHB.convert_search_space(ctx.space.to_tune())
    config_space.seed(ctx.seed)
    searcher = TuneBOHB(space=config_space, metric=metric, mode=mode, seed=ctx.seed,
                        max_concurrent=ctx.concurrency)
    scheduler = HyperBandForBOHB(time_attr=TIME_ATTR, max_t=ctx.max_budget,
                                 reduction_factor=3)
    return Plan(_limited(searcher, ctx), {}, ctx.trials, scheduler, {"bohb_engine": engine})


STRATEGIES: Registry[Strategy] = Registry("--strategy", "strategy")
register, get = STRATEGIES.register, STRATEGIES.find


for _strategy in (
    Strategy("random", _optuna(_random_sampler), "random search (Optuna's RandomSampler)",
             multi_objective=True, pbt=True),
    Strategy("grid", _grid, "every architecture of a finite space once", extendable=False),
    Strategy("tpe", _optuna(_tpe_sampler), "Bayesian: Optuna's TPE, define-by-run conditionals"),
    Strategy("gp", _optuna(_gp_sampler), "Bayesian: Optuna's Gaussian-process sampler"),
    Strategy("evolution", _evolution, "regularized (aging) evolution, AmoebaNet (Real et al. "
             "2019)", steers_by_first=True, options=EvolutionOptions),
    Strategy("local_search", _local_search, "local search: evaluate the best point's whole "
             "neighbourhood, move, restart at a local optimum (White et al. 2020)",
             options=LocalSearchOptions),
    Strategy("rl", _rl, "REINFORCE LSTM controller (Zoph & Le 2017)"),
    Strategy("bananas", _bananas, "BANANAS: an MLP-ensemble predictor, Thompson sampling over "
             "mutations of the best (White et al. 2021)"),
    Strategy("pnas", _pnas, "progressive NAS: grow one block at a time, a surrogate picks the "
             "top-K (Liu et al. 2018)"),
    Strategy("nsga2", _optuna(_nsga2_sampler), "multi-objective evolution: Optuna's NSGA-II",
             multi_objective=True, default_objectives=("val_accuracy:max", "params:min")),
    Strategy("bohb", _bohb, "BOHB: model-based sampling + Hyperband (brings its own "
             "scheduler)", stops_early=True),
    Strategy("zero_cost", zero_cost.plan, "score many sampled architectures with a zero-cost "
             "proxy, train the top-k", needs_dataset=True, scores="classification", inner=False,
             check=zero_cost.check_zero_cost_settings, options=zero_cost.ZeroCostOptions),
    Strategy("oneshot", weight_sharing.oneshot_plan, "weight sharing: train a supernet (SPOS or "
             "ENAS), then search against it with another strategy (evolution by default)",
             needs_dataset=True, scores="classification", inner=False, epochs_only=True,
             check=weight_sharing.check_weight_sharing_settings,
             options=weight_sharing.OneShotOptions),
    Strategy("darts", weight_sharing.darts_plan, "gradient-based: a Tune sweep over DARTS runs "
             "(Liu et al. 2019)", needs_dataset=True, inner=False, epochs_only=True,
             check=weight_sharing.check_weight_sharing_settings),
):
    register(_strategy)
