"""Settings -> a checked, parsed value, once: ``resolve(config) -> Resolved``.

Everything that can be checked before Ray starts or MLflow is written is checked here, against
the registries' capabilities (``Strategy``, ``Scheduler``), so bad input fails in about a second
with one line. Every later layer takes the parsed values from ``Resolved`` instead of parsing the
flags again.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Any

from raynas import schedulers, strategies
from raynas.config import SearchConfig
from raynas.data import Data, load_dataset
from raynas.errors import ConfigError
from raynas.estimation import load_space
from raynas.estimation.costs import check_cost_settings
from raynas.estimation.fidelity import Fidelity, parse_fidelity
from raynas.estimation.task import TASKS, Task
from raynas.models import builder_of, check_width, fix_fields
from raynas.objectives.constraints import Constraint, parse_constraints
from raynas.objectives.pareto import Objective, parse_objectives
from raynas.objectives.scalarize import SCALAR, parse_weights, scalarization_of
from raynas.schedulers import Scheduler
from raynas.space import Space
from raynas.strategies.base import Rungs, Strategy, StrategyContext

#: ``--time-budget`` units.
UNITS = {"s": 1, "m": 60, "h": 3600}


@dataclass(frozen=True)
class Resolved:
    """A search's settings, parsed and checked once, and passed down as one value."""

    config: SearchConfig
    space: Space
    data: Data
    task: Task
    objectives: tuple[Objective, ...]
    fidelity: Fidelity
    constraints: tuple[Constraint, ...]
    scalarize: str | None  # weighted | chebyshev: the objectives as one, or None
    weights: tuple[float, ...]  # the scalarisation's, one per objective
    strategy: Strategy
    scheduler: Scheduler
    time_budget_s: float | None
    options: Any  # the strategy's, parsed from --strategy-option (its ``Strategy.options``)
    rungs: Rungs = Rungs()  # what schedulers compare trials in (a time budget's plan: seconds)

    @property
    def metric(self) -> tuple[str, str]:
        """What Tune ranks trials by: the scalarised objective, else the first one."""
        return (SCALAR, "min") if self.scalarize else self.objectives[0]

    def context(self) -> StrategyContext:
        """What the strategy and the scheduler are built from."""
        c = self.config
        return StrategyContext.of(
            self.space, [self.metric] if self.scalarize else self.objectives, seed=c.seed,
            num_trials=c.num_trials, concurrency=c.resources.concurrency,
            max_budget=self.fidelity.max_budget, scheduler=c.scheduler, data=self.data,
            constraints=self.constraints, options=self.options, rungs=self.rungs)


def resolve(config: SearchConfig) -> Resolved:
    """Check and parse ``config`` (its ranges checked themselves when it was made); a one-line
    ``RaynasError`` names what is wrong."""
    time_budget_s = parse_duration(config.time_budget)
    strategy = strategies.get(config.strategy)
    options = strategy.parse_options(config.strategy_options)
    scheduler = schedulers.get(config.scheduler)
    objectives = tuple(parse_objectives(config.objective, strategy.default_objectives))
    constraints = tuple(parse_constraints(config.constraint))
    check_cost_settings(config)
    kind = scalarization_of(config, len(objectives),
                            strategy.multi_objective or (scheduler.multi_objective
                                                         and strategy.steers_by_first))
    weights = parse_weights(config.weights, len(objectives)) if kind else ()
    check_combination(strategy, scheduler, 1 if kind else len(objectives))
    fidelity = parse_fidelity(config.fidelity, config.max_epochs, config.proxy_task)
    for flag, part in (("--strategy", strategy), ("--scheduler", scheduler)):
        if part.epochs_only and fidelity.rungs:
            raise ConfigError(f"{flag} {part.name}: needs --fidelity epochs (it trains each "
                              "network on, epoch by epoch)")
    if config.resources.address and config.resources.address != "auto":
        probe(config.resources.address)
    space = load_space(fix_fields(config.space, config.fixed))
    if fidelity.task.width < 1 or (fidelity.rungs and fidelity.resource == "width"):
        check_width(space)
    data = load_dataset(config.dataset, seed=config.seed)
    task = check_task(space, data, strategy, fidelity)
    resolved = Resolved(config, space, data, task, objectives, fidelity, constraints, kind,
                        weights, strategy, scheduler, time_budget_s, options)
    if task.check is not None:
        task.load("check")(resolved)
    for part in (strategy, scheduler):
        if part.check is not None:
            part.check(resolved)
    return resolved


def check_task(space: Space, data: Data, strategy: Strategy, fidelity: Fidelity) -> Task:
    """The task that trains on ``data``, checked against the space's model, the strategy and
    the fidelity by their capabilities alone (no task, strategy or model is named here)."""
    task = TASKS.find(data.task)
    builder = builder_of(space)
    if task.models is not None and builder.task not in task.models:
        model_task = TASKS.get(builder.task)
        does = model_task.does if model_task else f"is for {builder.task}"
        give = f" or give it {model_task.data}" if model_task else ""
        raise ConfigError(f"--space {space.name}: model {space.model!r} {does}, and the dataset "
                          f"{task.holds}; use a {task.name} space ({task.spaces}){give}")
    if strategy.needs_dataset and task.problem is None:
        raise ConfigError(f"--strategy {strategy.name}: looks at the data itself and scores "
                          f"networks by a loss on their outputs, which a {task.name} search does "
                          "not have; use a strategy that trains each network (random, tpe, "
                          "evolution, rl, bananas, ...)")
    if strategy.scores is not None and strategy.scores != task.name:
        raise ConfigError(f"--strategy {strategy.name}: scores networks as a {strategy.scores} "
                          f"of its own; a {task.name} search trains each network (random, tpe, "
                          "evolution, rl, ...) or shares weights by its own loss (darts)")
    beyond = sorted(fidelity.varies() - set(task.fidelities))
    if beyond:
        allowed = ", ".join(task.fidelities) or "nothing but epochs"
        raise ConfigError(f"--fidelity/--proxy-task {beyond[0]}: not for a {task.name} search, "
                          f"whose proxy tasks may vary {allowed}; use --fidelity epochs")
    return task


def check_combination(strategy: Strategy, scheduler: Scheduler, num_objectives: int) -> None:
    """Whether a strategy, a scheduler and ``num_objectives`` (after scalarisation) can run
    together: from their capabilities alone, so a registered third-party one is checked too."""
    if scheduler.multi_objective and not (strategy.multi_objective or strategy.steers_by_first):
        able = [s.name for s in strategies.STRATEGIES.values()
                if s.multi_objective or s.steers_by_first]
        raise ConfigError(f"--scheduler {scheduler.name}: needs --strategy {', '.join(able)} "
                          f"(a strategy that takes several objectives or steers by the first), "
                          f"not {strategy.name!r}")
    if scheduler.multi_objective and num_objectives < 2:
        raise ConfigError(f"--scheduler {scheduler.name}: ranks trials by several objectives; "
                          "give two or more, e.g. --objective val_accuracy:max --objective "
                          "params:min, and no --scalarize")
    if num_objectives > 1 and not (strategy.multi_objective or scheduler.multi_objective):
        able = [s.name for s in strategies.STRATEGIES.values() if s.multi_objective]
        raise ConfigError(f"--objective: {num_objectives} objectives need a multi-objective "
                          f"strategy ({', '.join(able)}), not {strategy.name!r}")
    if scheduler.population is not None and not strategy.pbt:
        able = [s.name for s in strategies.STRATEGIES.values() if s.pbt]
        raise ConfigError(f"--scheduler {scheduler.name}: brings its own population (Tune's "
                          f"PBT accepts no searcher); use --strategy {' or '.join(able)}")


def combinations() -> list[tuple[str, str, int]]:
    """Every (strategy, scheduler, number of objectives) the registries allow together."""
    return [(s.name, c.name, n) for s in strategies.STRATEGIES.values()
            for c in schedulers.SCHEDULERS.values() for n in (1, 2)
            if _allowed(s, c, n)]


def _allowed(strategy: Strategy, scheduler: Scheduler, num_objectives: int) -> bool:
    try:
        check_combination(strategy, scheduler, num_objectives)
    except ConfigError:
        return False
    return True


def parse_duration(text: str | None) -> float | None:
    """``--time-budget``: ``90s``, ``20m``, ``1.5h`` or plain seconds -> seconds."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not match or float(match[1]) <= 0:
        raise ConfigError(f"--time-budget: expected a duration such as 90s, 20m or 1.5h, got "
                          f"{text!r}")
    return float(match[1]) * UNITS[match[2] or "s"]


def probe(address: str) -> None:
    """Fail fast on an unreachable cluster: ``ray.init`` would retry for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address: expected HOST:PORT, ray://HOST:PORT or auto, got "
                          f"{address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(f"--address: cannot reach a Ray cluster at {address} "
                          f"({exc.strerror or type(exc).__name__})") from None
