"""The applications are plug-ins: found through the ``raynas.plugins`` entry points, cheap to
load, and a missing one does not take the rest down."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import raynas.registry as registry

ROOT = Path(__file__).resolve().parents[2]
DECLARED = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][
    "raynas.plugins"]


def test_every_declared_plugin_is_an_installed_package_that_registers_something():
    from raynas.data import SOURCES
    from raynas.estimation.task import TASKS
    from raynas.models import BUILDERS

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]
    found = {**SOURCES, **TASKS, **BUILDERS}  # reading a registry loads the plug-ins
    assert found
    for name, module in DECLARED.items():
        assert module in packages, f"plug-in {name}: {module} is not in the wheel"
    installed = {e.name: e.value for e in registry.entry_points(group=registry.PLUGINS)}
    assert installed == DECLARED, "reinstall raynas: its entry points are out of date"


def test_loading_the_plugins_imports_neither_torch_nor_ray():
    code = ("import sys; from raynas.registry import load_plugins; load_plugins(); "
            "print(sorted(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_a_missing_plugin_is_skipped_with_one_warning(monkeypatch):
    gone = EntryPoint("gone", "raynas_gone_plugin", registry.PLUGINS)
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: [gone])
    with pytest.warns(UserWarning, match="plug-in 'gone' .* is not installed; skipped"):
        registry.load_plugins()


def test_a_plugin_that_misses_a_dependency_fails_loudly(monkeypatch, tmp_path):
    (tmp_path / "raynas_broken_plugin.py").write_text("import raynas_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    broken = EntryPoint("broken", "raynas_broken_plugin", registry.PLUGINS)
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: [broken])
    with pytest.raises(ModuleNotFoundError, match="raynas_no_such_dependency"):
        registry.load_plugins()
