"""Parse a search space from YAML or a dict, validating as it goes.

Every error names the file and the dotted field it is about, so a typo in a 200-line space is
found at once and never reaches Ray. Syntax of a node:

- ``{choice: [a, b, c]}`` — categorical; ``{int: [low, high], log: bool, step: n}``;
  ``{float: [low, high], log: bool}``;
- ``{repeat: [min, max], block: NODE}`` — a searched number of copies of ``block``;
- any other mapping — a group of named nodes; a scalar — a constant.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import yaml

from raynas.errors import SpaceError, did_you_mean
from raynas.space.nodes import Choice, Const, FloatRange, Group, IntRange, Node, Repeat

KINDS = ("choice", "int", "float", "repeat")
OPTIONS = {"choice": (), "int": ("log", "step"), "float": ("log",), "repeat": ("block",)}
TOP_LEVEL = ("name", "model", "description", "space")
SCALARS = (str, int, float, bool)


def read_yaml(path: Path) -> dict[str, Any]:
    """Load a space file; a syntax error becomes one line naming the file and line."""
    if not path.is_file():
        raise SpaceError(f"{path}: search space file not found")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpaceError(f"{where}: malformed YAML: {problem}") from None
    if not isinstance(doc, dict):
        raise SpaceError(f"{path}: a search space must be a mapping with a 'space' key")
    return doc


def parse_document(doc: dict[str, Any], origin: str) -> tuple[str, str, str, Group]:
    """Check the top level and parse the tree: returns (name, model, description, root)."""
    for key in doc:
        if key not in TOP_LEVEL:
            hint = did_you_mean(key, TOP_LEVEL)
            raise SpaceError(f"{origin}: unknown top-level key {key!r}{hint}")
    if "space" not in doc:
        raise SpaceError(f"{origin}: missing required key 'space'")
    name = doc.get("name") or Path(origin).stem
    if not isinstance(name, str):
        raise SpaceError(f"{origin}: name: must be a string")
    model = doc.get("model", "macro")
    description = doc.get("description", "")
    root = parse_node(doc["space"], "space", origin)
    if not isinstance(root, Group):
        raise SpaceError(f"{origin}: space: must be a mapping of named parameters")
    if any(field == "space" for field, _ in root.fields):
        raise SpaceError(f"{origin}: space.space: 'space' is reserved for the space's name")
    return name, str(model), str(description), root


def parse_node(spec: Any, where: str, origin: str) -> Node:
    def fail(message: str) -> SpaceError:
        return SpaceError(f"{origin}: {where}: {message}")

    if isinstance(spec, SCALARS):
        return Const(spec)
    if spec is None:
        raise fail("empty value (give a constant, a choice, a range, a repeat or a group)")
    if isinstance(spec, list):
        name = where.rsplit(".", 1)[-1]
        hint = did_you_mean(name, KINDS)
        if hint:  # e.g. {choise: [...]} parsed as a group holding a list
            raise fail(f"unknown key {name!r}{hint}")
        raise fail("a bare list is ambiguous: write {choice: [...]} to search over it")
    if not isinstance(spec, dict):
        raise fail(f"unsupported value {spec!r}")
    kinds = [k for k in KINDS if k in spec]
    if not kinds:
        if not spec:
            raise fail("empty group")
        children = ((str(k), parse_node(v, f"{where}.{k}", origin)) for k, v in spec.items())
        return Group(tuple(children))
    if len(kinds) > 1:
        raise fail(f"give one of {', '.join(KINDS)}, not {' and '.join(kinds)}")
    kind = kinds[0]
    for key in spec:
        if key != kind and key not in OPTIONS[kind]:
            allowed = [kind, *OPTIONS[kind]]
            raise fail(f"unknown key {key!r} for a {kind}{did_you_mean(key, allowed)}")
    if kind == "choice":
        return _choice(spec["choice"], fail)
    if kind == "repeat":
        low, high = _bounds(spec["repeat"], int, fail, "repeat")
        if low < 0:
            raise fail("repeat: the minimum count must be >= 0")
        if "block" not in spec:
            raise fail("repeat needs a 'block'")
        return Repeat(low, high, parse_node(spec["block"], f"{where}.block", origin))
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise fail(f"log: must be true or false, got {log!r}")
    if kind == "int":
        low, high = _bounds(spec["int"], int, fail, "int")
        step = spec.get("step", 1)
        if not isinstance(step, int) or isinstance(step, bool) or step < 1:
            raise fail(f"step: must be a positive integer, got {step!r}")
        if log and low < 1:
            raise fail("int: a log range needs low >= 1")
        return IntRange(low, high, log, step)
    low, high = _bounds(spec["float"], float, fail, "float")
    if log and low <= 0:
        raise fail("float: a log range needs low > 0")
    return FloatRange(low, high, log)


def _choice(values: Any, fail) -> Choice:
    if not isinstance(values, list):
        raise fail(f"choice: must be a list of values, got {values!r}")
    if not values:
        raise fail("choice: empty list of values")
    for value in values:
        if not isinstance(value, SCALARS):
            raise fail(f"choice: values must be scalars (str, number, bool), got {value!r}")
    if len({(type(v), v) for v in values}) != len(values):
        raise fail(f"choice: duplicate values in {values!r}")
    return Choice(tuple(values))


def _bounds(value: Any, kind: type, fail, label: str) -> tuple[Any, Any]:
    if not isinstance(value, list) or len(value) != 2:
        raise fail(f"{label}: must be [low, high], got {value!r}")
    low, high = (_number(v, kind, fail, label) for v in value)
    if low > high:
        raise fail(f"{label}: inverted range [{low}, {high}] (low must be <= high)")
    return low, high


def _number(value: Any, kind: type, fail, label: str) -> Any:
    # PyYAML reads ``1e-4`` (no dot) as a string: accept numeric strings for floats.
    if kind is float and isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok or not math.isfinite(value):
        what = "an integer" if kind is int else "a number"
        raise fail(f"{label}: bounds must be {what}, got {value!r}")
    return kind(value)
