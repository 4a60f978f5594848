"""``Space``: a validated search space and its adapters to Ray Tune, Optuna and our searchers.

An *architecture* is a plain JSON value (nested dicts/lists of scalars) with a stable hash. The
flat dict ``{"layers.count": 3, "layers.0.op": "conv_3x3", …}`` is only its transport encoding
between searchers and trainables: ``decode`` it once, at the edge.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raynas.errors import SpaceError, show
from raynas.space.nodes import (
    COUNT_KEY,
    PARAMS,
    Choice,
    Const,
    FloatRange,
    Group,
    IntRange,
    Node,
    Param,
    Repeat,
    enumerate_values,
    sample_value,
    size,
)

if TYPE_CHECKING:
    import optuna

Arch = dict[str, Any]
Flat = dict[str, Any]


def arch_hash(arch: Arch) -> str:
    """A stable 12-hex-digit identity of an architecture (same value -> same hash)."""
    text = json.dumps(arch, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Decision:
    """One searchable decision in the flat encoding.

    ``requires`` lists ``(count_key, i)`` pairs: the decision is active only when every such
    count is greater than ``i`` (layer ``i`` exists only if ``num_layers > i``).
    """

    key: str
    param: Param
    requires: tuple[tuple[str, int], ...] = ()

    def active(self, flat: Flat) -> bool:
        return all(flat.get(count, 0) > i for count, i in self.requires)


def _join(prefix: str, name: str | int) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def _scalar(value: Any) -> Any:
    """Turn numpy scalars (as Tune samplers return them) into plain Python values."""
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value


def _snapped(param: Param, value: Any) -> Any:
    """A float a sampler put one rounding error outside its range, moved onto the bound.

    Tune's log-uniform samples ``exp(uniform(log(low), log(high)))``, and ``exp(log(3.0))`` is
    ``3.0000000000000004``: such a value is the bound, not an invalid architecture.
    """
    if isinstance(param, FloatRange) and isinstance(value, float):
        if value < param.low and math.isclose(value, param.low, rel_tol=1e-12):
            return param.low
        if value > param.high and math.isclose(value, param.high, rel_tol=1e-12):
            return param.high
    return value


class Space:
    """A search space; construct with ``raynas.load_space``."""

    def __init__(self, name: str, model: str, root: Group, description: str = "",
                 document: dict[str, Any] | None = None) -> None:
        self.name = name
        self.model = model
        self.root = root
        self.description = description
        self.document = document or {}
        self._decisions = self._collect(root, "", ())

    def __repr__(self) -> str:
        return f"Space({self.name!r}, model={self.model!r}, size={self.size():.3g})"

    # --- structure -------------------------------------------------------------------------
    def decisions(self) -> list[Decision]:
        """All decisions in a fixed order (every copy of a repeat up to its maximum)."""
        return list(self._decisions)

    def size(self) -> float:
        """Number of distinct architectures; ``math.inf`` when a float is searched."""
        return size(self.root)

    def domain(self, path: str) -> Node | None:
        """The node at a schematic path such as ``layers.op`` (repeat indices left out)."""
        node: Node = self.root
        for part in path.split("."):
            while isinstance(node, Repeat):
                node = node.block
            if not isinstance(node, Group):
                return None
            node = dict(node.fields).get(part)
            if node is None:
                return None
        return node

    def values(self, path: str) -> list[Any] | None:
        """Every value the field at ``path`` can take; None for a continuous range or a group."""
        node = self.domain(path)
        if isinstance(node, Const):
            return [node.value]
        return node.options() if isinstance(node, PARAMS) else None

    def fields(self, path: str) -> list[str]:
        """The names in the group at ``path`` ([] when there is no such group)."""
        node = self.domain(path)
        return [name for name, _ in node.fields] if isinstance(node, Group) else []

    # --- architectures ---------------------------------------------------------------------
    def sample(self, rng: random.Random) -> Arch:
        return self._wrap(sample_value(self.root, rng))

    def grid(self, limit: int = 100_000) -> list[Arch]:
        """Every architecture, in a fixed order; a SpaceError if there are more than ``limit``."""
        continuous = [d.key for d in self._decisions if isinstance(d.param, FloatRange)]
        if continuous:
            raise SpaceError(f"{self.name}: {continuous[0]}: a continuous range cannot be "
                             "enumerated (a grid needs choices or int ranges)")
        if self.size() > limit:
            raise SpaceError(f"{self.name}: {self.size():.3g} architectures, more than the "
                             f"{limit} a grid may enumerate")
        return [self._wrap(v) for v in enumerate_values(self.root)]

    def validate(self, arch: Arch) -> Arch:
        """Return ``arch`` if it belongs to this space, else raise SpaceError naming the field."""
        self.encode(arch)
        return arch

    def encode(self, arch: Arch) -> Flat:
        """Architecture -> flat config of its active decisions (inverse of ``decode``)."""
        if not isinstance(arch, dict):
            raise SpaceError(f"{self.name}: an architecture must be a mapping, got {show(arch)}")
        body = {k: v for k, v in arch.items() if k != "space"}
        if arch.get("space", self.name) != self.name:
            raise SpaceError(f"architecture is from space {arch['space']!r}, not {self.name!r}")
        flat: Flat = {}
        self._encode(self.root, body, "", flat)
        return flat

    def decode(self, flat: Flat) -> Arch:
        """Flat config (from Tune, Optuna or our searchers) -> validated architecture."""
        return self._wrap(self._decode(self.root, flat, ""))

    def mutate(self, arch: Arch, rng: random.Random) -> Arch:
        """Change one decision of ``arch``; a repeat count changes by adding or removing a copy.

        Floats move by a Gaussian step (in log space for log ranges); other decisions take a
        different value uniformly. Returns a new architecture; ``arch`` is not modified.
        """
        child = copy.deepcopy(arch)
        sites: list[Callable[[], None]] = []
        self._mutation_sites(self.root, child, None, None, rng, sites)
        if sites:
            rng.choice(sites)()
        return child

    # --- adapters --------------------------------------------------------------------------
    def to_tune(self) -> dict[str, Any]:
        """A Ray Tune ``param_space`` over the flat keys (inactive keys are ignored by decode)."""
        from ray import tune  # not at the top: models (so every plug-in) imports this module

        def domain(p: Param) -> Any:
            if isinstance(p, Choice):
                return tune.choice(list(p.values))
            if isinstance(p, IntRange):
                if p.step > 1:
                    # Tune quantizes to multiples of the step; ours count from ``low``.
                    if p.low % p.step == 0:
                        return tune.qrandint(p.low, p.high, p.step)
                    return tune.choice(p.options())
                return (tune.lograndint if p.log else tune.randint)(p.low, p.high + 1)
            return (tune.loguniform if p.log else tune.uniform)(p.low, p.high)

        return {d.key: domain(d.param) for d in self._decisions}

    def to_optuna(self, trial: optuna.Trial) -> Arch:
        """Define-by-run: suggest decisions in order, with real conditionals; returns the arch."""

        def suggest(node: Node, key: str) -> Any:
            if isinstance(node, Choice):
                return trial.suggest_categorical(key, list(node.values))
            if isinstance(node, IntRange):
                return trial.suggest_int(key, node.low, node.high, step=node.step, log=node.log)
            if isinstance(node, FloatRange):
                return trial.suggest_float(key, node.low, node.high, log=node.log)
            if isinstance(node, Const):
                return node.value
            if isinstance(node, Group):
                return {name: suggest(child, _join(key, name)) for name, child in node.fields}
            count = suggest(node.count, _join(key, COUNT_KEY))
            return [suggest(node.block, _join(key, i)) for i in range(count)]

        return self._wrap(suggest(self.root, ""))

    def optuna_define_by_run(self, trial: optuna.Trial) -> None:
        """The form ``OptunaSearch(space=…)`` wants: suggests, returns no constants."""
        self.to_optuna(trial)

    # --- internals -------------------------------------------------------------------------
    def _wrap(self, body: dict[str, Any]) -> Arch:
        return {"space": self.name, **body}

    def _collect(self, node: Node, key: str, requires: tuple) -> list[Decision]:
        if isinstance(node, PARAMS):
            return [Decision(key, node, requires)]
        if isinstance(node, Const):
            return []
        if isinstance(node, Group):
            return [d for n, c in node.fields for d in self._collect(c, _join(key, n), requires)]
        count_key = _join(key, COUNT_KEY)
        out = [Decision(count_key, node.count, requires)]
        for i in range(node.max):
            out += self._collect(node.block, _join(key, i), (*requires, (count_key, i)))
        return out

    def _decode(self, node: Node, flat: Flat, key: str) -> Any:
        if isinstance(node, PARAMS):
            if key not in flat:
                raise SpaceError(f"{self.name}: missing value for {key!r}")
            return self._checked(node, _snapped(node, _scalar(flat[key])), key)
        if isinstance(node, Const):
            return node.value
        if isinstance(node, Group):
            return {n: self._decode(child, flat, _join(key, n)) for n, child in node.fields}
        count = self._decode(node.count, flat, _join(key, COUNT_KEY))
        return [self._decode(node.block, flat, _join(key, i)) for i in range(count)]

    def _checked(self, param: Param, value: Any, key: str) -> Any:
        if isinstance(param, FloatRange) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(param, IntRange) and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not param.contains(value):
            raise SpaceError(f"{self.name}: {key}: value {value!r} is not in {param}")
        return value

    def _encode(self, node: Node, value: Any, key: str, flat: Flat) -> None:
        where = key or "architecture"
        if isinstance(node, PARAMS):
            flat[key] = self._checked(node, value, key)
        elif isinstance(node, Const):
            if value != node.value:
                raise SpaceError(f"{self.name}: {where}: must be the constant {node.value!r}")
        elif isinstance(node, Group):
            if not isinstance(value, dict):
                raise SpaceError(f"{self.name}: {where}: expected a mapping, got {show(value)}")
            names = [n for n, _ in node.fields]
            extra = sorted(set(value) - set(names))
            if extra:
                raise SpaceError(f"{self.name}: {where}: unknown field {extra[0]!r}")
            for name, child in node.fields:
                if name not in value:
                    raise SpaceError(f"{self.name}: {_join(key, name)}: missing")
                self._encode(child, value[name], _join(key, name), flat)
        else:
            if not isinstance(value, list) or not node.min <= len(value) <= node.max:
                raise SpaceError(
                    f"{self.name}: {where}: expected a list of {node.min}..{node.max} items"
                )
            flat[_join(key, COUNT_KEY)] = len(value)
            for i, item in enumerate(value):
                self._encode(node.block, item, _join(key, i), flat)

    def _mutation_sites(self, node: Node, value: Any, parent: Any, slot: Any,
                        rng: random.Random, sites: list[Callable[[], None]]) -> None:
        if isinstance(node, PARAMS):
            if _searched(node):
                def change(node=node, parent=parent, slot=slot) -> None:
                    parent[slot] = _mutated(node, parent[slot], rng)

                sites.append(change)
        elif isinstance(node, Group):
            for name, child in node.fields:
                self._mutation_sites(child, value[name], value, name, rng, sites)
        elif isinstance(node, Repeat):
            if node.min != node.max:
                def resize(node=node, items=value) -> None:
                    grow = len(items) < node.max and (len(items) == node.min or rng.random() < 0.5)
                    if grow:
                        items.insert(rng.randint(0, len(items)), sample_value(node.block, rng))
                    else:
                        del items[rng.randrange(len(items))]

                sites.append(resize)
            for i, item in enumerate(value):
                self._mutation_sites(node.block, item, value, i, rng, sites)


def _searched(param: Param) -> bool:
    """Whether ``param`` has more than one value (a mutation can change it)."""
    if isinstance(param, FloatRange):
        return param.low < param.high
    return size(param) > 1


def _mutated(param: Param, value: Any, rng: random.Random) -> Any:
    if isinstance(param, FloatRange):
        if param.log:  # clamped before exp: a step on a wide range can overflow a float
            low, high = math.log(param.low), math.log(param.high)
            step = rng.gauss(0.0, 0.2 * (high - low))
            new = math.exp(min(high, max(low, math.log(value) + step)))
        else:
            new = value + rng.gauss(0.0, 0.2 * (param.high - param.low))
        return min(param.high, max(param.low, new))
    if isinstance(param, IntRange):  # at least two values: this ends after two draws on average
        while (new := rng.randrange(param.low, param.high + 1, param.step)) == value:
            pass
        return new
    # ``1 == True``: a choice between them must still pick the other one.
    options = [v for v in param.values if not (v == value and type(v) is type(value))]
    return rng.choice(options)
