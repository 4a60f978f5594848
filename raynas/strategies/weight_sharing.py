"""The weight-sharing strategies: ``oneshot`` (train a supernet, then search against it with
any strategy) and ``darts`` (gradient-based: a Tune sweep over DARTS runs).

Both score architectures with shared weights instead of training each one, so their ``Plan``
carries an ``estimator`` (``estimation.oneshot.OneShot``, ``estimation.darts.Darts``) that gives
the search its trainable, tracker and best architecture. Those estimators (and MLflow, which
they log to) are imported by the plans only: ``strategies`` imports this module, and resolving
a search's settings must not load them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ray.tune.search.basic_variant import BasicVariantGenerator

from raynas.errors import ConfigError, did_you_mean
from raynas.models.supernet import check_supernet_space
from raynas.space import Space
from raynas.strategies.base import OPTION, Plan, StrategyContext
from raynas.strategies.rl import ReinforceController

SAMPLERS = ("spos", "enas")  # how the supernet's training samples paths (OneShotOptions)


@dataclass(frozen=True)
class OneShotOptions:
    """``--strategy-option`` of ``oneshot``."""

    supernet: str = field(default="spos", metadata={
        "help": "how the supernet's training samples paths: spos (uniformly) or enas (an ENAS "
                "controller)"})
    searcher: str = field(default="evolution", metadata={
        "help": "the strategy that searches against the trained supernet"})

    def __post_init__(self) -> None:
        from raynas.strategies import STRATEGIES  # the registry's package imports this module

        if self.supernet not in SAMPLERS:
            raise ConfigError(f"{OPTION} supernet: unknown sampler {self.supernet!r}"
                              f"{did_you_mean(self.supernet, SAMPLERS)}; known: "
                              f"{', '.join(SAMPLERS)}")
        inner = [name for name, s in STRATEGIES.items() if s.inner]
        if self.searcher not in inner:
            raise ConfigError(f"{OPTION} searcher: {self.searcher!r} cannot search against a "
                              f"supernet{did_you_mean(self.searcher, inner)}; known: "
                              f"{', '.join(inner)}")


def check_weight_sharing_settings(resolved: Any) -> None:
    """A weight-sharing search needs one objective and no constraint (its trials report only
    the shared weights' accuracy) and a cell space (the epoch fidelity and real data:
    ``Strategy.epochs_only``, ``needs_dataset``)."""
    if len(resolved.objectives) > 1 or resolved.constraints:
        raise ConfigError(f"--strategy {resolved.strategy.name}: scores candidates by the shared "
                          "weights' validation accuracy alone: no second --objective and no "
                          "--constraint")
    check_supernet_space(resolved.space)


def controller(sampler: str, space: Space) -> Callable[..., Any] | None:
    """How the supernet's training samples paths: None (SPOS: uniformly), or for ENAS a
    REINFORCE controller's factory (``seed=`` -> a fresh controller)."""
    if sampler != "enas":
        return None
    return functools.partial(ReinforceController, space, "reward", "max", batch_size=4)


def oneshot_plan(ctx: StrategyContext) -> Plan:
    """Stage 2's searcher is any other strategy's, unchanged; the estimator adds stage 1."""
    from raynas.estimation.oneshot import OneShot
    from raynas.strategies import STRATEGIES  # the registry's package imports this module

    options: OneShotOptions = ctx.options
    searcher = STRATEGIES[options.searcher]
    inner = searcher.build(replace(ctx, options=searcher.parse_options()))
    return replace(inner, estimator=OneShot(options.supernet,
                                            controller(options.supernet, ctx.space)),
                   notes={**inner.notes, "supernet": options.supernet,
                          "oneshot_searcher": options.searcher})


def darts_plan(ctx: StrategyContext) -> Plan:
    """Tune's random variant generator over DARTS's hyperparameters (``darts.SWEEP``)."""
    from raynas.estimation.darts import DEFAULT_TRIALS, Darts, param_space

    searcher = BasicVariantGenerator(random_state=ctx.seed, max_concurrent=ctx.concurrency)
    return Plan(searcher, param_space(), ctx.num_trials or DEFAULT_TRIALS, estimator=Darts())
