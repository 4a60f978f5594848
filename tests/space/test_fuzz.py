"""Fuzzing the space loader with random mutations of the built-in YAML spaces.

Every mutated space either loads into a space that works (sample, validate, encode/decode, size,
mutate, grid, Tune and Optuna adapters) or fails with one ``RaynasError`` line that names the
file or space — never with another exception (KeyError, TypeError, RecursionError, YAML errors…).
The mutations act on the parsed tree (delete/replace/insert keys, duplicate/truncate/swap lists,
typos of real names) and on the YAML text (truncation, stray characters, tabs, brackets, bytes).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raynas.errors import RaynasError, SpaceError
from raynas.estimation import load_space
from raynas.estimation.train import OPTIMIZERS, TRAIN_DEFAULTS, hyperparameters
from raynas.models.macro import CONNECTIONS, LAYER_FIELDS
from raynas.ops import OPS
from raynas.space import Space, arch_hash, builtin_spaces

BUILTINS = {name: yaml.safe_load(path.read_text()) for name, path in builtin_spaces().items()}
TEXTS = {name: path.read_text() for name, path in builtin_spaces().items()}

# Deterministic (the same examples on every run and machine), no example database in the repo.
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=400,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TEXT_FUZZ = settings(FUZZ, max_examples=300)
LEGAL_FUZZ = settings(FUZZ, max_examples=200)

# Optuna warns when a stepped int range's high is not on the step grid (so do we: not an error).
pytestmark = pytest.mark.filterwarnings("ignore:The distribution is specified by:UserWarning")
optuna.logging.set_verbosity(optuna.logging.ERROR)
logging.getLogger("optuna").setLevel(logging.ERROR)

# --- values a mutation writes -----------------------------------------------------------------
WORDS = [
    *OPS, *CONNECTIONS, *OPTIMIZERS, *TRAIN_DEFAULTS, *LAYER_FIELDS,
    "choice", "int", "float", "repeat", "log", "step", "block", "name", "model", "description",
    "space", "layers", "stem_channels", "train", "count", "macro", "micro", "conv_9x9", "",
    " ", "1e-4", "1e999", "-1e999", "nan", ".inf", "yes", "no", "on", "~", "null", "0x1F",
    "2020-01-01", "a.b", "layers.count", "layers.0.op", "a\nb", "\t", "a: b", "[1, 2]",
]


@st.composite
def typos(draw, words: list[str] = WORDS) -> str:
    """A real name with one edit: a character dropped, doubled, swapped, changed or re-cased."""
    word = draw(st.sampled_from([w for w in words if w]))
    i = draw(st.integers(0, len(word) - 1))
    edit = draw(st.sampled_from(["drop", "double", "swap", "change", "upper"]))
    if edit == "drop":
        return word[:i] + word[i + 1:]
    if edit == "double":
        return word[:i] + word[i] + word[i:]
    if edit == "swap" and i + 1 < len(word):
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if edit == "upper":
        return word.upper()
    return word[:i] + draw(st.characters(codec="utf-8")) + word[i + 1:]


INTS = st.one_of(
    st.integers(-3, 4),
    st.integers(),
    st.sampled_from([0, -1, 100, 1000, 2500, 9999, 999_999, 10**6, 2**31, 2**53, 2**53 + 1,
                     2**63, -(2**63) - 1, 10**30, -(10**30), 10**400]),
)
FLOATS = st.one_of(
    st.floats(),
    st.sampled_from([0.0, -0.0, 0.5, 1e-320, 5e-324, 1e308, -1e308, 1.7e308, math.nan, math.inf,
                     -math.inf, 1e-4, 3.0]),
)
SPECIAL = [0, 1, -1, 2, 3, 100, 500, 1000, 2000, 2500, 9999, 999_999, 10**6, 2**53, 2**53 + 1,
           10**30,
           10**400, 0.0, -0.0, 0.5, 1e-4, 3.0, 1e-320, 1e308, -1e308, math.nan, math.inf,
           -math.inf, True, "1e-4", "two"]
NUMBERS = st.one_of(st.sampled_from(SPECIAL), INTS, FLOATS)  # extremes most often
TEXT = st.one_of(st.sampled_from(WORDS), typos(), st.text(max_size=8))
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT)
KEYS = st.one_of(st.sampled_from(WORDS), typos(), st.text(max_size=6), st.integers(-2, 3),
                 st.none(), st.booleans(), st.sampled_from([1.5, math.nan, math.inf]))


def _nodes(inner: st.SearchStrategy) -> st.SearchStrategy:
    """Space-shaped values: choices, ranges and repeats with random (often invalid) contents."""
    bounds = st.lists(st.one_of(INTS, FLOATS, st.sampled_from([1, 2, 16, 64])), min_size=0,
                      max_size=3)
    return st.one_of(
        st.fixed_dictionaries({"choice": st.lists(inner, max_size=4)}),
        st.fixed_dictionaries({"int": bounds}, optional={"log": SCALARS, "step": INTS}),
        st.fixed_dictionaries({"float": bounds}, optional={"log": SCALARS}),
        st.fixed_dictionaries({"repeat": bounds, "block": inner}),
        st.lists(inner, max_size=3),
        st.dictionaries(KEYS, inner, max_size=3),
    )


# Deep-copy what VALUES draws before mutating the tree: sampled_from returns shared objects.
VALUES = st.one_of(
    SCALARS,
    st.sampled_from([[], {}, [[]], {"choice": []}, {"repeat": [0, 0], "block": {}}]),
    st.recursive(SCALARS, _nodes, max_leaves=6),
)


# --- mutations of the parsed tree ---------------------------------------------------------------
def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Every node's path (dict keys and list indices), the root's being ()."""
    out = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            out += _paths(value, (*prefix, i))
    return out


def _get(tree: Any, path: tuple) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def _set(tree: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    _get(tree, path[:-1])[path[-1]] = value
    return tree


MUTATIONS = ("delete", "replace", "replace", "insert_key", "rename_key", "duplicate", "truncate",
             "swap", "collapse", "typo", "wrap", "number", "number", "bounds", "bounds")
RANGES = ("int", "float", "repeat")


@st.composite
def mutated_docs(draw, name: str) -> Any:
    """A built-in space's tree after one to three random mutations."""
    doc = copy.deepcopy(BUILTINS[name])
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 2, 3]))):  # mostly one: deeper bugs show
        kind = draw(st.sampled_from(MUTATIONS))
        paths = _paths(doc)
        if kind == "delete":
            inner = [p for p in paths if p]
            if inner:
                path = draw(st.sampled_from(inner))
                del _get(doc, path[:-1])[path[-1]]
        elif kind == "replace":
            doc = _set(doc, draw(st.sampled_from(paths)), copy.deepcopy(draw(VALUES)))
        elif kind in ("insert_key", "rename_key"):
            maps = [p for p in paths if isinstance(_get(doc, p), dict)
                    and (kind == "insert_key" or _get(doc, p))]
            if maps:
                node = _get(doc, draw(st.sampled_from(maps)))
                if kind == "rename_key":
                    key = draw(st.sampled_from(list(node)))
                    similar = typos([key]) if isinstance(key, str) and key else KEYS
                    node[draw(st.one_of(similar, KEYS))] = node.pop(key)
                else:
                    node[draw(KEYS)] = copy.deepcopy(draw(VALUES))
        elif kind in ("duplicate", "truncate", "swap", "collapse"):
            lists = [p for p in paths if isinstance(_get(doc, p), list) and _get(doc, p)]
            if lists:
                path = draw(st.sampled_from(lists))
                items = _get(doc, path)
                if kind == "duplicate":
                    i = draw(st.integers(0, len(items) - 1))
                    items.insert(i, copy.deepcopy(items[i]))
                elif kind == "truncate":
                    del items[draw(st.integers(0, len(items) - 1)):]
                elif kind == "swap":  # low and high of a range
                    items.reverse()
                else:  # low == high: a range of one value
                    items[:] = [items[draw(st.integers(0, len(items) - 1))]] * len(items)
        elif kind == "typo":
            strings = [p for p in paths if isinstance(_get(doc, p), str) and _get(doc, p)]
            if strings:
                path = draw(st.sampled_from(strings))
                doc = _set(doc, path, draw(typos([_get(doc, path)])))
        elif kind == "wrap":  # a value where a node is expected, or the reverse
            path = draw(st.sampled_from(paths))
            node = _get(doc, path)
            wrapper = draw(st.sampled_from(["list", "choice", "int", "repeat", "group"]))
            doc = _set(doc, path, {"list": [node], "choice": {"choice": node},
                                   "int": {"int": node}, "repeat": {"repeat": [1, 2],
                                                                    "block": node},
                                   "group": {"x": node}}[wrapper])
        elif kind == "number":  # one number becomes another, often an extreme one
            numbers = [p for p in paths if isinstance(_get(doc, p), int | float)]
            if numbers:
                doc = _set(doc, draw(st.sampled_from(numbers)), draw(NUMBERS))
        else:  # a choice or range becomes a range with new bounds and options
            nodes = [p for p in paths if isinstance(_get(doc, p), dict)
                     and any(k in _get(doc, p) for k in (*RANGES, "choice"))]
            if nodes:
                node = _get(doc, draw(st.sampled_from(nodes)))
                kinds = [k for k in (*RANGES, "choice") if k in node]
                for k in kinds:
                    del node[k]
                kind = draw(st.sampled_from(RANGES)) if draw(st.booleans()) else kinds[0]
                low = draw(NUMBERS)
                high = draw(st.one_of(st.just(low), NUMBERS))
                node[kind] = [low, high]
                if kind == "repeat" and "block" not in node:
                    node["block"] = 1
                for option, values in (("log", st.booleans()), ("step", NUMBERS)):
                    if draw(st.integers(0, 3)) == 0:
                        node[option] = draw(values)
    return doc


# --- odd but legal spaces -------------------------------------------------------------------------
LEGAL_SCALARS = st.one_of(
    st.sampled_from([0, 1, True, False, 1.0, 0.0, -0.0, "", "1", "conv_3x3", 2**53, -(2**53),
                     5e-324, -1e308, 1e308]),
    st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=4))


@st.composite
def legal_ranges(draw, kind: str, low_min: float | None = None) -> dict:
    """An int or float range with legal but extreme bounds: equal, tiny, huge, stepped, log."""
    if kind == "int":
        low = draw(st.one_of(st.integers(-5, 20), st.integers(-(2**53), 2**53 - 10**6)))
        if low_min is not None:
            low = max(low, int(low_min))
        high = low + draw(st.one_of(st.integers(0, 3), st.integers(0, 10**6 - 1)))
        node = {"int": [low, high]}
        if draw(st.booleans()):
            node["step"] = draw(st.sampled_from([1, 2, 3, 7, 1000, 2**40]))
        elif low >= 1 and draw(st.booleans()):
            node["log"] = True
        return node
    bound = st.floats(min_value=low_min if low_min is not None else -1e300, max_value=1e300,
                      allow_nan=False, allow_infinity=False)
    low, high = sorted([draw(bound), draw(st.one_of(bound, st.just(None)))],
                       key=lambda v: math.inf if v is None else v)
    node = {"float": [low, low if high is None else high]}
    if low > 0 and draw(st.booleans()):
        node["log"] = True
    return node


@st.composite
def legal_nodes(draw, depth: int = 0) -> Any:
    """A valid node of any kind for a field no model checks."""
    kinds = ["const", "choice", "int", "float", "group"] + (["repeat"] if depth < 2 else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "const":
        return draw(LEGAL_SCALARS)
    if kind == "choice":  # 1 == True == 1.0 are distinct choices
        values = st.lists(LEGAL_SCALARS, min_size=1, max_size=5, unique_by=lambda v: (type(v), v))
        return {"choice": draw(values)}
    if kind in ("int", "float"):
        return draw(legal_ranges(kind))
    if kind == "group":
        names = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1,
                        max_size=4)
        return draw(st.dictionaries(names, legal_nodes(depth + 1), min_size=1, max_size=3))
    low = draw(st.integers(0, 3))
    return {"repeat": [low, low + draw(st.integers(0, 4))], "block": draw(legal_nodes(depth + 1))}


@st.composite
def legal_docs(draw, name: str) -> dict:
    """A built-in space with new bounds, subsets of its choices and extra unchecked fields."""
    doc = copy.deepcopy(BUILTINS[name])
    for node in [_get(doc, p) for p in _paths(doc) if isinstance(_get(doc, p), dict)]:
        if not draw(st.booleans()):
            continue
        if "repeat" in node:  # hundreds of layers: a size far beyond a float
            low = draw(st.integers(0, 3))
            big = draw(st.integers(0, 5)) == 0  # a sixth: slow to check, so not more
            node["repeat"] = [low, low + draw(st.integers(100, 300) if big else st.integers(0, 5))]
        elif "float" in node:
            node.update(draw(legal_ranges("float", low_min=5e-324)))
        elif "choice" in node:
            values = node["choice"]
            if all(isinstance(v, int) and v > 0 for v in values) and draw(st.booleans()):
                del node["choice"]
                node.update(draw(legal_ranges("int", low_min=1)))
            else:
                node["choice"] = draw(st.lists(st.sampled_from(values), min_size=1,
                                               unique=True))
    for i in range(draw(st.integers(0, 2))):
        doc["space"][f"extra{i}"] = draw(legal_nodes())
    return doc


# --- mutations of the YAML text -----------------------------------------------------------------
SNIPPETS = ["!!set ", "!!binary ", "!!timestamp ", "!!float ", "!!int ", "!!str ", "!!map ",
            "!!python/object:os.system ", "&a ", "*a", "<<: *a\n", "? ", "2024-13-45", "0x",
            "1e5000", "9" * 5000, ".nan", "-.inf", "|\n", ">-\n", "---\n", "...\n",
            "%YAML 1.1\n", "%TAG ! tag:x\n", "\n  - ", ": ", "{a: 1}", "[1, 2]", "~", "null"]
CHARS = st.one_of(st.sampled_from(list("\t[]{}:-&*!%@`|>'\"#,?\n \\") + ["\x00", "\ufeff",
                                                                           "\x85", "\u2028"]),
                  st.characters(codec="utf-8"))


@st.composite
def corrupted_texts(draw, name: str) -> bytes:
    """A built-in space's YAML text (or a dump of a mutated tree) with one to three corruptions."""
    if draw(st.booleans()):
        text = TEXTS[name]
    else:
        text = yaml.safe_dump(draw(mutated_docs(name)), sort_keys=False, allow_unicode=True)
    data = text.encode()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "insert", "insert", "delete", "tab", "bracket",
                                     "byte", "line", "indent", "snippet", "snippet"]))
        at = draw(st.integers(0, len(data)))
        if kind == "truncate":
            data = data[:at]
        elif kind == "insert":
            data = data[:at] + draw(CHARS).encode() + data[at:]
        elif kind == "snippet":
            data = data[:at] + draw(st.sampled_from(SNIPPETS)).encode() + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 20)):]
        elif kind == "tab":
            data = data[:at] + b"\t" + data[at:]
        elif kind == "bracket":
            data = data[:at] + draw(st.sampled_from([b"[", b"]", b"{", b"}", b"[[", b"{{"])) \
                + data[at:]
        elif kind == "byte":
            data = data[:at] + bytes([draw(st.integers(0x80, 0xFF))]) + data[at:]
        else:
            lines = data.split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            if kind == "line":
                lines.insert(i, lines[i])
            else:
                lines[i] = b" " * draw(st.integers(0, 5)) + lines[i].lstrip(b" ")
            data = b"\n".join(lines)
    return data


# --- the property ---------------------------------------------------------------------------------
def _dict_origin(doc: dict) -> str:
    """How an error about a dict space names it: its name, else ``<dict>``."""
    name = doc.get("name")
    return name if isinstance(name, str) and name and name.isprintable() else "<dict>"


def check_error(exc: RaynasError, origin: str) -> None:
    message = str(exc)
    assert len(message.splitlines()) == 1, f"error is not one line: {message!r}"
    assert message.startswith(f"{origin}:"), f"error does not name {origin!r}: {message!r}"
    assert len(message) - len(origin) > 3, f"error says nothing: {message!r}"
    assert len(message) < 1000, f"error is too long: {message[:200]!r}…"


def check_hyperparameters(hp: dict[str, Any]) -> None:
    """What the training loop reads from an architecture's ``train`` group is usable."""
    assert hp["optimizer"] in OPTIMIZERS
    assert isinstance(hp["batch_size"], int) and hp["batch_size"] >= 1
    assert isinstance(hp["lr"], int | float) and hp["lr"] > 0
    assert isinstance(hp["weight_decay"], int | float) and hp["weight_decay"] >= 0


def check_usable(space: Space) -> None:
    """Everything a strategy, Tune or Optuna does with a space works on a loaded space."""
    rng = random.Random(0)
    size = space.size()
    assert size >= 1
    repr(space)
    for _ in range(3):
        arch = space.sample(rng)
        assert space.validate(arch) is arch
        flat = space.encode(arch)
        assert space.decode(flat) == arch
        json.dumps(arch, allow_nan=False)
        arch_hash(arch)
        child = space.mutate(arch, rng)
        space.validate(child)
        check_hyperparameters(hyperparameters(arch))
    try:
        grid = space.grid(limit=32)
    except SpaceError as exc:  # too many architectures, or a continuous range
        assert len(str(exc).splitlines()) == 1
    else:
        assert len(grid) == size
        for arch in grid[:4]:
            space.validate(arch)
    small = len(space.decisions()) <= 200  # hundreds of layers: the slow adapters run once
    domains = space.to_tune()
    for seed in range(3 if small else 1):
        flat = {k: d.sample(random_state=seed) for k, d in domains.items()}
        space.validate(space.decode(flat))
    if small:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        space.validate(space.to_optuna(study.ask()))


def check_dict(doc: dict) -> Space | None:
    """The property for a space given as a dict: the loaded space, or None after an error."""
    try:
        space = load_space(copy.deepcopy(doc))
    except RaynasError as exc:
        check_error(exc, _dict_origin(doc))
        return None
    check_usable(space)
    return space


def check_file(data: bytes, path: Path) -> Space | None:
    """The property for a space given as a YAML file holding ``data``."""
    path.write_bytes(data)
    try:
        space = load_space(path)
    except RaynasError as exc:
        check_error(exc, str(path))
        return None
    check_usable(space)
    return space


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "space.yaml"


def test_builtin_spaces_load_and_are_usable(scratch):
    for name, doc in BUILTINS.items():
        assert check_dict(doc) is not None, name
        assert check_file(TEXTS[name].encode(), scratch) is not None, name


def _string_paths(node: Any, path: tuple = ()) -> list[tuple]:
    """The paths of every string value in a parsed space."""
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _string_paths(v, (*path, k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _string_paths(v, (*path, i))]
    return [path] if isinstance(node, str) else []


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_a_huge_value_is_shown_short(name):
    """Every string value of a space made 5,000 characters long (an op, an optimizer, a
    connection) loads or fails with a short line: the fuzzer once made a 5,170-character one."""
    for path in _string_paths(BUILTINS[name]):
        doc = copy.deepcopy(BUILTINS[name])
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = "9" * 5000 + node[path[-1]]
        check_dict(doc)


@pytest.mark.parametrize("name", sorted(BUILTINS))
@FUZZ
@given(data=st.data())
def test_mutated_space_loads_or_fails_with_one_line(name, data, scratch):
    doc = data.draw(mutated_docs(name), label="doc")
    if isinstance(doc, dict):
        check_dict(doc)
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=data.draw(st.booleans()))
    check_file(text.encode(), scratch)


@pytest.mark.parametrize("name", sorted(BUILTINS))
@LEGAL_FUZZ
@given(data=st.data())
def test_odd_but_legal_space_loads_and_is_usable(name, data, scratch):
    doc = data.draw(legal_docs(name), label="doc")
    check_dict(doc)  # a RaynasError only for a space beyond the size limits
    check_file(yaml.safe_dump(doc, sort_keys=False).encode(), scratch)


@pytest.mark.parametrize("name", sorted(BUILTINS))
@TEXT_FUZZ
@given(data=st.data())
def test_corrupted_yaml_text_loads_or_fails_with_one_line(name, data, scratch):
    check_file(data.draw(corrupted_texts(name), label="text"), scratch)
