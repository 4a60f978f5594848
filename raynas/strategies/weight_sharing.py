"""The weight-sharing strategies: ``oneshot`` (train a supernet, then search against it with
any strategy) and ``darts`` (gradient-based: a Tune sweep over DARTS runs).

Both score architectures with shared weights instead of training each one, so their ``Plan``
carries an ``estimator`` (``estimation.oneshot.OneShot``, ``estimation.darts.Darts``) that gives
the search its trainable, tracker and best architecture. Kept free of Ray and torch imports at
module level: the CLI checks the flags before anything heavy loads.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from raynas.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from raynas.config import SearchConfig
    from raynas.space import Space
    from raynas.strategies import Plan, StrategyContext

NAMES = ("oneshot", "darts")
SAMPLERS = ("spos", "enas")  # how the supernet's training samples paths (see --supernet)
NOT_INNER = (*NAMES, "zero_cost")  # strategies that cannot search against a supernet


def check_settings(config: SearchConfig, space: Space) -> None:
    """A weight-sharing search needs a cell space, the epoch fidelity and known names."""
    from raynas.config import fidelity_of
    from raynas.models.supernet import check_supernet_space
    from raynas.strategies import STRATEGIES

    if config.strategy not in NAMES:
        return
    check_supernet_space(space)
    if fidelity_of(config).rungs:
        raise ConfigError(f"--fidelity {config.fidelity}: --strategy {config.strategy} trains "
                          "one supernet per run; use --fidelity epochs")
    if config.dataset.startswith("tabular:"):
        raise ConfigError(f"--strategy {config.strategy}: trains a supernet on real data; a "
                          "tabular: dataset has none")
    if config.supernet not in SAMPLERS:
        raise ConfigError(f"--supernet: unknown sampler {config.supernet!r}"
                          f"{did_you_mean(config.supernet, SAMPLERS)}; known: "
                          f"{', '.join(SAMPLERS)}")
    inner = [s for s in STRATEGIES if s not in NOT_INNER]
    if config.oneshot_searcher not in inner:
        raise ConfigError(f"--oneshot-searcher: {config.oneshot_searcher!r} cannot search "
                          f"against a supernet{did_you_mean(config.oneshot_searcher, inner)}; "
                          f"known: {', '.join(inner)}")


def oneshot_plan(ctx: StrategyContext) -> Plan:
    """Stage 2's searcher is any other strategy's, unchanged; the estimator adds stage 1."""
    from raynas.estimation.oneshot import OneShot
    from raynas.strategies import make_plan

    inner = make_plan(ctx.oneshot_searcher, ctx)
    return replace(inner, estimator=OneShot(ctx.supernet),
                   notes={**inner.notes, "supernet": ctx.supernet,
                          "oneshot_searcher": ctx.oneshot_searcher})


def darts_plan(ctx: StrategyContext) -> Plan:
    """Tune's random variant generator over DARTS's hyperparameters (``darts.SWEEP``)."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from raynas.estimation.darts import DEFAULT_TRIALS, Darts, param_space
    from raynas.strategies import Plan

    searcher = BasicVariantGenerator(random_state=ctx.seed, max_concurrent=ctx.concurrency)
    return Plan(searcher, param_space(), ctx.num_trials or DEFAULT_TRIALS, estimator=Darts())
