"""The nodes of a search space: parameters (choice, int, float), constants, groups and repeats.

A space is a tree. Leaves are *decisions* (a Choice, IntRange or FloatRange) or constants; a Group
names its children; a Repeat holds a block whose number of copies is itself a decision, so the
block's decisions at copy ``i`` exist only when the count is greater than ``i`` (a conditional
space). Every node knows how to sample, enumerate and count itself; ``Space`` walks the tree.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

Value = Any  # a JSON scalar: str, int, float or bool


@dataclass(frozen=True)
class Choice:
    """A categorical decision among listed values."""

    values: tuple[Value, ...]

    def options(self) -> list[Value] | None:
        return list(self.values)

    def contains(self, value: Value) -> bool:
        return any(value == v and type(value) is type(v) for v in self.values)

    def sample(self, rng: random.Random) -> Value:
        return rng.choice(self.values)


@dataclass(frozen=True)
class IntRange:
    """An integer decision in [low, high] (inclusive), optionally log-scaled or stepped."""

    low: int
    high: int
    log: bool = False
    step: int = 1

    def options(self) -> list[Value] | None:
        return list(range(self.low, self.high + 1, self.step))

    def contains(self, value: Value) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )

    def size(self) -> int:
        return len(range(self.low, self.high + 1, self.step))

    def sample(self, rng: random.Random) -> int:
        if self.log:  # exp(log(x)) may round below x: clamp into the range
            x = math.exp(rng.uniform(math.log(self.low), math.log(self.high + 1)))
            value = self.low + (int(x) - self.low) // self.step * self.step
            return min(self.high, max(self.low, value))
        return rng.randrange(self.low, self.high + 1, self.step)


@dataclass(frozen=True)
class FloatRange:
    """A continuous decision in [low, high], optionally log-uniform."""

    low: float
    high: float
    log: bool = False

    def options(self) -> list[Value] | None:
        return None

    def contains(self, value: Value) -> bool:
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
        )

    def sample(self, rng: random.Random) -> float:
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return min(self.high, max(self.low, value))  # rounding can step just outside


Param = Choice | IntRange | FloatRange


@dataclass(frozen=True)
class Const:
    """A fixed value: part of every architecture, never searched."""

    value: Value


@dataclass(frozen=True)
class Group:
    """Named children, decoded to a dict in declaration order."""

    fields: tuple[tuple[str, Node], ...]


@dataclass(frozen=True)
class Repeat:
    """``count`` copies of ``block``; the count is a decision in [min, max]."""

    min: int
    max: int
    block: Node

    @property
    def count(self) -> IntRange:
        return IntRange(self.min, self.max)


Node = Choice | IntRange | FloatRange | Const | Group | Repeat
PARAMS = (Choice, IntRange, FloatRange)
COUNT_KEY = "count"
MAX_COUNT = 2**1000  # a larger number of values is reported as math.inf (floats end at 2**1024)


def _capped(n: float) -> float:
    return math.inf if n > MAX_COUNT else n


def size(node: Node) -> float:
    """Number of distinct values of ``node``: an int, or ``math.inf`` when a float is searched
    or the number is beyond what a float can hold."""
    if isinstance(node, FloatRange):
        return math.inf
    if isinstance(node, IntRange):
        return node.size()
    if isinstance(node, Choice):
        return len(node.values)
    if isinstance(node, Const):
        return 1
    if isinstance(node, Group):
        total = 1
        for _, child in node.fields:
            total = _capped(total * size(child))
        return total
    block, copies, total = size(node.block), 1, 0  # sum of block**c for c in [min, max]
    for c in range(node.max + 1):
        if c >= node.min:
            total = _capped(total + copies)
        copies = _capped(copies * block)
    return total


def enumerate_values(node: Node) -> Iterator[Value]:
    """Every value of a finite ``node`` in a fixed order (check ``size`` first: it can be huge)."""
    if isinstance(node, PARAMS):
        yield from node.options()
    elif isinstance(node, Const):
        yield node.value
    elif isinstance(node, Group):
        names = [name for name, _ in node.fields]
        children = [list(enumerate_values(child)) for _, child in node.fields]
        for combo in itertools.product(*children):
            yield dict(zip(names, combo, strict=True))
    else:
        blocks = list(enumerate_values(node.block))
        for count in range(node.min, node.max + 1):
            for combo in itertools.product(blocks, repeat=count):
                yield list(combo)


def sample_value(node: Node, rng: random.Random) -> Value:
    """A value of ``node`` drawn the natural way: the count first, then each copy's decisions."""
    if isinstance(node, PARAMS):
        return node.sample(rng)
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Group):
        return {name: sample_value(child, rng) for name, child in node.fields}
    return [sample_value(node.block, rng) for _ in range(node.count.sample(rng))]
