"""Parse a search space from YAML or a dict, validating as it goes.

Every error names the file and the dotted field it is about, so a typo in a 200-line space is
found at once and never reaches Ray. Syntax of a node:

- ``{choice: [a, b, c]}`` — categorical; ``{int: [low, high], log: bool, step: n}``;
  ``{float: [low, high], log: bool}``;
- ``{repeat: [min, max], block: NODE}`` — a searched number of copies of ``block``;
- any other mapping — a group of named nodes; a scalar — a constant.

Limits keep every space usable by Tune, Optuna and our searchers: integers within +-2**53 (exact
in a float and in JSON), finite floats, at most ``MAX_INT_VALUES`` values in an int range and
``MAX_NODES`` decisions and constants in the largest architecture, ``MAX_DEPTH`` levels.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import yaml

from raynas.errors import SpaceError, did_you_mean, show
from raynas.space.nodes import Choice, Const, FloatRange, Group, IntRange, Node, Repeat

KINDS = ("choice", "int", "float", "repeat")
OPTIONS = {"choice": (), "int": ("log", "step"), "float": ("log",), "repeat": ("block",)}
TOP_LEVEL = ("name", "model", "description", "space")
SCALARS = (str, int, float, bool)
MAX_INT = 2**53  # larger integers lose precision in floats (Optuna, Tune's quantizer) and JSON
MAX_INT_VALUES = 1_000_000  # an int range's values are listed by grid, RL and PBT
MAX_NODES = 10_000  # decisions and constants in the largest architecture
MAX_DEPTH = 50  # levels of groups and repeats (a recursive YAML alias is caught here too)

def _hint(key: Any, options) -> str:
    """did_you_mean for a key of any type (str() of a 5000-digit int raises ValueError)."""
    return did_you_mean(key, options) if isinstance(key, str) else ""


def read_yaml(path: Path) -> dict[str, Any]:
    """Load a space file; a syntax error becomes one line naming the file and line."""
    if not path.is_file():
        raise SpaceError(f"{path}: search space file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpaceError(f"{path}: not a UTF-8 text file (byte {exc.start})") from None
    except OSError as exc:
        raise SpaceError(f"{path}: cannot read the search space file: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except RecursionError:
        raise SpaceError(f"{path}: malformed YAML: nested too deeply") from None
    # Besides YAMLError, PyYAML's constructors raise what Python raises on bad values: a
    # ValueError for a date like 2024-13-45 or an integer of 5000 digits, an AttributeError for
    # "!!timestamp x"... Whatever it raises, the text is not a valid YAML document.
    except Exception as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        if isinstance(exc, yaml.YAMLError):
            problem = getattr(exc, "problem", None) or str(exc)
        else:
            problem = f"a value cannot be constructed ({type(exc).__name__}: {exc})"
        problem = " ".join(problem.split())
        if len(problem) > 200:
            problem = problem[:200] + "..."
        raise SpaceError(f"{where}: malformed YAML: {problem}") from None
    if not isinstance(doc, dict):
        raise SpaceError(f"{path}: a search space must be a mapping with a 'space' key")
    return doc


def parse_document(doc: dict[str, Any], origin: str) -> tuple[str, str, str, Group]:
    """Check the top level and parse the tree: returns (name, model, description, root)."""
    for key in doc:
        if key not in TOP_LEVEL:
            raise SpaceError(f"{origin}: unknown top-level key {show(key)}"
                             f"{_hint(key, TOP_LEVEL)}")
    if "space" not in doc:
        raise SpaceError(f"{origin}: missing required key 'space'")
    name = doc.get("name")
    if name is None or name == "":
        name = Path(origin).stem
    if not isinstance(name, str) or not name.isprintable():
        raise SpaceError(f"{origin}: name: must be a one-line string, got {show(name)}")
    model = doc.get("model", "macro")
    if not isinstance(model, str):
        raise SpaceError(f"{origin}: model: must be a string, got {show(model)}")
    description = doc.get("description", "")
    if not isinstance(description, str | None):
        raise SpaceError(f"{origin}: description: must be a string, got {show(description)}")
    root = parse_node(doc["space"], "space", origin)
    if not isinstance(root, Group):
        raise SpaceError(f"{origin}: space: must be a mapping of named parameters")
    if any(field == "space" for field, _ in root.fields):
        raise SpaceError(f"{origin}: space.space: 'space' is reserved for the space's name")
    nodes = _nodes(root)
    if nodes > MAX_NODES:
        raise SpaceError(f"{origin}: space: its largest architecture has {nodes} decisions and "
                         f"constants, more than {MAX_NODES} (lower a repeat's maximum)")
    return name, model, description or "", root


def parse_node(spec: Any, where: str, origin: str) -> Node:
    def fail(message: str) -> SpaceError:
        return SpaceError(f"{origin}: {where}: {message}")

    if where.count(".") > MAX_DEPTH:
        raise fail(f"nested more than {MAX_DEPTH} levels deep (a recursive YAML alias?)")
    if isinstance(spec, SCALARS):
        return Const(_scalar(spec, fail, "a constant"))
    if spec is None:
        raise fail("empty value (give a constant, a choice, a range, a repeat or a group)")
    if isinstance(spec, list):
        name = where.rsplit(".", 1)[-1]
        hint = did_you_mean(name, KINDS)
        if hint:  # e.g. {choise: [...]} parsed as a group holding a list
            raise fail(f"unknown key {name!r}{hint}")
        raise fail("a bare list is ambiguous: write {choice: [...]} to search over it")
    if not isinstance(spec, dict):
        raise fail(f"unsupported value {show(spec)}")
    kinds = [k for k in KINDS if k in spec]
    if not kinds:
        if not spec:
            raise fail("empty group")
        for key in spec:
            if not isinstance(key, str):
                raise fail(f"field name {show(key)} must be a string (quote it in YAML)")
            if not key or "." in key or not key.isprintable():
                raise fail(f"invalid field name {show(key)} (a non-empty, one-line name "
                           "without '.')")
        children = ((k, parse_node(v, f"{where}.{k}", origin)) for k, v in spec.items())
        return Group(tuple(children))
    if len(kinds) > 1:
        raise fail(f"give one of {', '.join(KINDS)}, not {' and '.join(kinds)}")
    kind = kinds[0]
    for key in spec:
        if key != kind and key not in OPTIONS[kind]:
            allowed = [kind, *OPTIONS[kind]]
            raise fail(f"unknown key {show(key)} for a {kind}{_hint(key, allowed)}")
    if kind == "choice":
        return _choice(spec["choice"], fail)
    if kind == "repeat":
        low, high = _bounds(spec["repeat"], int, fail, "repeat")
        if low < 0:
            raise fail("repeat: the minimum count must be >= 0")
        if "block" not in spec:
            raise fail("repeat needs a 'block'")
        block = parse_node(spec["block"], f"{where}.block", origin)
        nodes = 1 + high * _nodes(block)
        if nodes > MAX_NODES:
            raise fail(f"repeat: {high} copies of the block make {nodes} decisions and "
                       f"constants, more than {MAX_NODES}")
        return Repeat(low, high, block)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise fail(f"log: must be true or false, got {show(log)}")
    if kind == "int":
        low, high = _bounds(spec["int"], int, fail, "int")
        step = spec.get("step", 1)
        if not isinstance(step, int) or isinstance(step, bool) or not 1 <= step <= MAX_INT:
            raise fail(f"step: must be a positive integer, got {show(step)}")
        if log and low < 1:
            raise fail("int: a log range needs low >= 1")
        if log and step != 1:
            raise fail("int: a log range cannot have a step (Optuna does not support both)")
        count = len(range(low, high + 1, step))
        if count > MAX_INT_VALUES:
            raise fail(f"int: [{low}, {high}] has {count} values, more than {MAX_INT_VALUES} "
                       "(give a step or use a float range)")
        return IntRange(low, high, log, step)
    low, high = _bounds(spec["float"], float, fail, "float")
    if log and low <= 0:
        raise fail("float: a log range needs low > 0")
    if not math.isfinite(high - low):
        raise fail(f"float: range [{low}, {high}] is too wide for a float")
    return FloatRange(low, high, log)


def _nodes(node: Node) -> int:
    """Decisions and constants in the largest value of ``node`` (every repeat at its maximum)."""
    if isinstance(node, Group):
        return sum(_nodes(child) for _, child in node.fields)
    if isinstance(node, Repeat):
        return 1 + node.max * _nodes(node.block)
    return 1  # a decision or a constant


def _scalar(value: Any, fail, what: str) -> Any:
    """A constant or choice value: numbers must be finite and integers within +-2**53."""
    if isinstance(value, float) and not math.isfinite(value):
        raise fail(f"{what} must be a finite number, got {show(value)}")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise fail(f"{what} must be an integer within +-2**53, got {show(value)}")
    return value


def _choice(values: Any, fail) -> Choice:
    if not isinstance(values, list):
        raise fail(f"choice: must be a list of values, got {show(values)}")
    if not values:
        raise fail("choice: empty list of values")
    for value in values:
        if not isinstance(value, SCALARS):
            raise fail(f"choice: values must be scalars (str, number, bool), got {show(value)}")
        _scalar(value, fail, "choice: a value")
    if len({(type(v), v) for v in values}) != len(values):
        raise fail(f"choice: duplicate values in {show(values)}")
    return Choice(tuple(values))


def _bounds(value: Any, kind: type, fail, label: str) -> tuple[Any, Any]:
    if not isinstance(value, list) or len(value) != 2:
        raise fail(f"{label}: must be [low, high], got {show(value)}")
    low, high = (_number(v, kind, fail, label) for v in value)
    if low > high:
        raise fail(f"{label}: inverted range [{low}, {high}] (low must be <= high)")
    return low, high


def _number(value: Any, kind: type, fail, label: str) -> Any:
    # PyYAML reads ``1e-4`` (no dot) as a string: accept numeric strings for floats.
    if kind is float and isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    what = "an integer" if kind is int else "a finite number"
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise fail(f"{label}: bounds must be {what}, got {show(value)}")
    if kind is float:
        if isinstance(value, int) and abs(value) > MAX_INT:  # also: too large for a float
            raise fail(f"{label}: integer bounds must be within +-2**53 (write 1.0e20 for a large "
                           f"float), got {show(value)}")
        if not math.isfinite(value):
            raise fail(f"{label}: bounds must be {what}, got {show(value)}")
        return float(value)
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise fail(f"{label}: bounds must be {what}, got {show(value)}")
    if abs(value) > MAX_INT:
        raise fail(f"{label}: bounds must be integers within +-2**53, got {show(value)}")
    return int(value)
