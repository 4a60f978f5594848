"""The scheduler registry: a name -> a ``Scheduler`` descriptor that builds a Ray Tune
``TrialScheduler`` (how long each trial trains) and says what it needs, so the settings are
checked against capabilities. Third parties add their own with ``register``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
)
from ray.tune.search.basic_variant import BasicVariantGenerator

from raynas.config import TIME_ATTR
from raynas.errors import ConfigError
from raynas.registry import Registry
from raynas.space import Space
from raynas.strategies.base import Plan, StrategyContext


@dataclass(frozen=True)
class Scheduler:
    """A scheduler as the registry knows it. Schedulers get metric and mode from
    ``TuneConfig`` (Tune refuses them in both places)."""

    name: str
    build: Callable[[StrategyContext], Any]
    description: str
    multi_objective: bool = False  # ranks trials by every objective: needs two or more
    epochs_only: bool = False  # acts on trials that keep training: --fidelity epochs only
    # Compares trials at rungs of any monotone measure (``StrategyContext.rungs``), seconds of
    # training included: a time budget's plan gives it rungs in seconds.
    in_time: bool = False
    # Brings the searcher too (Tune's PBT takes no other): only a ``Strategy.pbt`` one is named.
    population: Callable[[StrategyContext], Plan] | None = None
    check: Callable[[Any], None] | None = None


def pbt_keys(space: Space) -> list[str]:
    """The decisions PBT may mutate: training hyperparameters, when nothing else is searched.

    The optimizer is excluded: a trial that exploits another copies its optimizer state, which
    only loads into the same optimizer type.
    """
    searched = [d.key for d in space.decisions()
                if d.param.options() is None or len(d.param.options()) > 1]
    arch = [k for k in searched if not k.startswith("train.") or k == "train.optimizer"]
    if arch or not searched:
        raise ConfigError(
            f"--scheduler pbt tunes the training hyperparameters of a fixed architecture, but "
            f"space {space.name!r} searches {', '.join(arch) or 'nothing'}; use a space "
            "whose architecture and optimizer are constant, e.g. --space fixed_cnn")
    return searched


def _pbt_population(ctx: StrategyContext) -> Plan:
    """PBT starts from a random population (Tune allows no other searcher with it) and then
    explores by mutating hyperparameters of running trials, copying the better ones' weights -
    which only makes sense when every trial has the same architecture."""
    pbt_keys(ctx.space)
    searcher = BasicVariantGenerator(random_state=ctx.seed, max_concurrent=ctx.concurrency)
    return Plan(searcher, ctx.space.to_tune(), ctx.trials)


# Schedulers get metric and mode from ``TuneConfig`` (Tune refuses them in both places).
def _fifo(ctx: StrategyContext) -> Any:
    return FIFOScheduler()


def _asha(ctx: StrategyContext) -> Any:
    rungs = ctx.rungs
    return ASHAScheduler(time_attr=rungs.attr, max_t=rungs.max or ctx.max_budget,
                         grace_period=rungs.grace, reduction_factor=3)


def _hyperband(ctx: StrategyContext) -> Any:
    rungs = ctx.rungs
    return HyperBandScheduler(time_attr=rungs.attr, max_t=rungs.max or ctx.max_budget,
                              reduction_factor=3)


def _median(ctx: StrategyContext) -> Any:
    return MedianStoppingRule(time_attr=ctx.rungs.attr, grace_period=ctx.rungs.grace,
                              min_samples_required=3)


def _curve(ctx: StrategyContext) -> Any:
    from raynas.schedulers.curve import LearningCurveStopping

    return LearningCurveStopping(time_attr=TIME_ATTR, max_t=ctx.max_budget)


def _pbt(ctx: StrategyContext) -> Any:
    # A list makes PBT step to a neighbouring value; a continuous domain is scaled by 0.8/1.2
    # and then clipped back into the space's range.
    from raynas.schedulers.pbt import LatestCheckpointPBT

    space = ctx.space
    domains = space.to_tune()
    decisions = {d.key: d.param for d in space.decisions()}
    mutations = {k: decisions[k].options() or domains[k] for k in pbt_keys(space)}
    return LatestCheckpointPBT(time_attr=TIME_ATTR,
                               perturbation_interval=max(1, ctx.max_budget // 4),
                               hyperparam_mutations=mutations,
                               custom_explore_fn=functools.partial(_clip, decisions))


def _clip(decisions: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    for key, param in decisions.items():
        if param.options() is None and key in config:
            config[key] = min(param.high, max(param.low, float(config[key])))
    return config


def _mo_asha(ctx: StrategyContext) -> Any:
    """Ranks by every objective of the search, with its constraints."""
    from raynas.schedulers.mo_asha import MultiObjectiveASHA

    return MultiObjectiveASHA(list(zip(ctx.metric, ctx.mode, strict=True)), ctx.max_budget,
                              constraints=ctx.constraints)


SCHEDULERS: Registry[Scheduler] = Registry("--scheduler", "scheduler")
register, get = SCHEDULERS.register, SCHEDULERS.find


def _check_pbt(resolved: Any) -> None:
    pbt_keys(resolved.space)


for _scheduler in (
    Scheduler("fifo", _fifo, "train every trial for --max-epochs"),
    Scheduler("asha", _asha, "asynchronous successive halving: stop the weakest early (Li et al. "
              "2020)", in_time=True),
    Scheduler("hyperband", _hyperband, "synchronous Hyperband brackets (Li et al. 2018); pauses "
              "trials", in_time=True),
    Scheduler("median", _median, "median stopping rule: stop a trial below the running median",
              in_time=True),
    Scheduler("curve", _curve, "learning-curve extrapolation: stop a trial unlikely to beat the "
              "best (Domhan et al. 2015)"),
    Scheduler("pbt", _pbt, "population-based training of the hyperparameters of a fixed "
              "architecture", epochs_only=True, population=_pbt_population, check=_check_pbt),
    Scheduler("mo-asha", _mo_asha, "multi-objective ASHA: stop dominated trials early (Schmucker "
              "et al. 2021)", multi_objective=True),
):
    register(_scheduler)


def bracket_warning(scheduler: Any, concurrency: int) -> str | None:
    """Tune's Hyperband is synchronous: it halves a bracket once all the trials it holds reach
    the rung, and a bracket holds only the trials that started before that. Unless every
    bracket's trials run at once, brackets stay part-filled and nothing is halved."""
    if not isinstance(scheduler, HyperBandScheduler):
        return None
    # Tune's own bracket arithmetic (n0: trials, r0: first rung; r0 == 0 brackets are skipped).
    total = sum(scheduler._get_n0(s) for s in range(scheduler._s_max_1) if scheduler._get_r0(s))
    if total <= concurrency:
        return None
    return (f"hyperband: its brackets hold {total} trials but --concurrency is {concurrency}; "
            f"they are halved only when their trials run at once, so raise --concurrency to "
            f"{total} (with a fractional --cpus-per-trial) or use --scheduler asha")
