"""Constraints on a trial's metrics (``--constraint latency_ms<=5``), and how a result is
judged against them."""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from raynas.errors import ConfigError, did_you_mean
from raynas.objectives.metrics import known

FEASIBLE = "feasible"  # in every result of a search with constraints: False = infeasible
VIOLATIONS = "violations"  # the broken constraints, comma-separated
_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|<|>)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Constraint:
    """A bound a trial's reported metric must keep, e.g. ``params<=200000``."""

    metric: str
    op: str
    bound: float

    def holds(self, value: float) -> bool:
        return bool(_OPS[self.op](float(value), self.bound))

    def __str__(self) -> str:
        bound = int(self.bound) if self.bound.is_integer() else self.bound
        return f"{self.metric}{self.op}{bound}"


def parse_constraints(texts: Sequence[str] | None) -> list[Constraint]:
    """``--constraint METRIC<=BOUND`` (ops ``<=``, ``<``, ``>=``, ``>``; repeatable)."""
    constraints = []
    for text in texts or ():
        match = _CONSTRAINT.match(text)
        if match is None:
            raise ConfigError(f"--constraint: expected METRIC<=BOUND (or <, >=, >), got {text!r}")
        metric, op, bound = match.groups()
        if metric not in known():
            raise ConfigError(f"--constraint: unknown metric {metric!r}"
                              f"{did_you_mean(metric, known())}; one of {', '.join(known())}")
        try:
            value = float(bound)
        except ValueError:
            value = float("nan")
        if value != value:  # NaN would make every comparison false
            raise ConfigError(f"--constraint: bound {bound!r} of {text!r} is not a number")
        constraints.append(Constraint(metric, op, value))
    return constraints


def violations(result: Mapping, constraints: Sequence[Constraint]) -> list[str]:
    """The constraints ``result`` breaks, as text; a metric not reported (yet) is not checkable,
    so it is no violation."""
    return [str(c) for c in constraints
            if result.get(c.metric) is not None and not c.holds(result[c.metric])]

