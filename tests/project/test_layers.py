"""The layering of docs/design.md, checked on the source: every raynas module imports only from
its own layer or below (imports inside functions count too), so the import graph has no circle,
and no module imports another's private names."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The applications: plug-ins that register what they add (docs/design.md, "Applications").
APPLICATIONS = ("raynas.tasks", "raynas.tabular", "raynas.ofa")
#: The core layers, which find the applications through their registries only.
CORE = ("raynas.space", "raynas.data", "raynas.models", "raynas.objectives", "raynas.report",
        "raynas.tracking", "raynas.estimation", "raynas.strategies", "raynas.schedulers",
        "raynas.experiment")
#: Bottom to top. A module belongs to the first entry its dotted name starts with.
LAYERS = [
    ("raynas.errors", "raynas.config", "raynas.registry"),
    ("raynas.space",),
    ("raynas.ops", "raynas.data", "raynas.runtime",
     "raynas.search_spaces", "raynas.bench.registry"),
    ("raynas.models",),
    ("raynas.objectives",),
    ("raynas.report",),
    ("raynas.tracking",),
    ("raynas.estimation",),
    ("raynas.strategies", "raynas.schedulers"),
    ("raynas.experiment",),
    ("raynas.deploy", "raynas.bench", "raynas.testing"),
    APPLICATIONS,
    ("raynas.cli",),
    ("raynas",),  # the package's lazy public API
]


def layer(module: str) -> int:
    for level, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return level
    raise AssertionError(f"{module}: in no layer of docs/design.md")


def modules() -> dict[str, Path]:
    found = {}
    for path in (ROOT / "raynas").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(module: str, path: Path):
    """(imported module, names) for every raynas import in ``module``, at any depth."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((a.name, []) for a in node.names if a.name.split(".")[0] == "raynas")
        elif isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, *([name] if name else [])])
            if name.split(".")[0] == "raynas":
                yield name, [a.name for a in node.names]


def test_every_module_imports_only_from_its_layer_or_below():
    known = modules()
    wrong = []
    for module, path in known.items():
        for name, names in imports(module, path):
            targets = [f"{name}.{n}" if f"{name}.{n}" in known else name for n in names] or [
                name]
            for target in targets:
                if module.startswith(target + ".") or target == module:
                    continue  # a package's own parent, or itself
                if layer(target) > layer(module):
                    wrong.append(f"{module} -> {target}")
    assert not wrong, "imports up the layers: " + ", ".join(sorted(set(wrong)))


def test_no_module_imports_private_names_of_another():
    private = [f"{module}: {name}.{n}" for module, path in modules().items()
               for name, names in imports(module, path) for n in names
               if n.startswith("_") and name != module]
    assert not private


def test_every_package_is_installed():
    """A package missing from pyproject's list is missing from the wheel."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    packages = {m for m, p in modules().items() if p.name == "__init__.py"}
    assert packages <= listed


def test_no_core_module_names_an_application():
    """Imports, and module paths in strings too (a lazy ``"module:attr"`` reference): a core
    module that names an application depends on it, whatever the import graph says."""
    named = []
    for module, path in modules().items():
        if not module.startswith(CORE):
            continue
        strings = [node.value for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, ast.Constant) and isinstance(node.value, str)]
        named += [f"{module} -> {n}" for n in [*(i for i, _ in imports(module, path)), *strings]
                  if any(n == a or n.startswith((a + ".", a + ":")) for a in APPLICATIONS)]
    assert not named, "the core names applications: " + ", ".join(sorted(set(named)))
