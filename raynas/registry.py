"""Registries of named entries that third parties extend: strategies, schedulers, tasks, data
sources, model builders, benchmarks. One lookup for all, so an unknown name is the same
one-line error everywhere.

Applications (a task type, Once-for-All, tabular benchmarks) are plug-ins: each is a package
named in the ``raynas.plugins`` entry-point group (``pyproject.toml``), whose import registers
its entries. A registry loads the plug-ins the first time it is read, so the core layers find
an application without importing it, the way MLflow finds its plug-ins; a third party's package
joins by declaring the same entry point. Heavy code is referenced lazily as ``"module:attr"``
(``Ref``; Ray Tune's ``SEARCH_ALG_IMPORT`` does the same), so loading the plug-ins imports
neither torch nor Ray.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Generic, Protocol, TypeVar

from raynas.errors import ConfigError, did_you_mean, show

#: The entry-point group whose modules register applications.
PLUGINS = "raynas.plugins"

#: A callable or class, given directly or as ``"package.module:attr"`` to import on first use.
Ref = str | Callable[..., Any]

_loaded = False


def load_ref(ref: Ref) -> Any:
    """The object ``ref`` names (``"package.module:attr"``), or ``ref`` itself."""
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    value: Any = import_module(module)
    for part in attr.split(".") if attr else ():
        value = getattr(value, part)
    return value


def load_plugins() -> None:
    """Import every ``raynas.plugins`` entry point once per process (each registers its
    entries). Set before importing, so a plug-in that reads a registry does not recurse. A
    plug-in whose package is gone (uninstalled, or an install's metadata older than its
    checkout) is skipped with one warning, as MLflow skips a broken plug-in: the rest works."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for entry in sorted(entry_points(group=PLUGINS), key=lambda e: e.name):
        try:
            entry.load()
        except ModuleNotFoundError as exc:
            if exc.name is None or not entry.value.startswith(exc.name):
                raise  # the plug-in is there and itself misses a module: a real error
            warnings.warn(f"raynas plug-in {entry.name!r} ({entry.value}) is not installed; "
                          "skipped", stacklevel=2)


class Named(Protocol):
    name: str


T = TypeVar("T", bound=Named)


class Registry(dict[str, T], Generic[T]):
    """Entries by name, in the order they were registered; every read loads the plug-ins
    first."""

    def __init__(self, flag: str, kind: str) -> None:
        super().__init__()
        self.flag, self.kind = flag, kind

    def register(self, entry: T) -> T:
        """Add (or replace) an entry: a search in this process can name it at once."""
        self[entry.name] = entry
        return entry

    def find(self, name: str) -> T:
        """The entry called ``name``, or a ``ConfigError`` naming the flag and close names."""
        load_plugins()
        if name not in self:
            raise ConfigError(f"{self.flag}: unknown {self.kind} {show(name)}"
                              f"{did_you_mean(name, self)}; known: {', '.join(self)}")
        return self[name]

    # The reads a caller makes, each after the plug-ins have registered.
    def __iter__(self) -> Iterator[str]:
        load_plugins()
        return super().__iter__()

    def __getitem__(self, name: str) -> T:
        load_plugins()
        return super().__getitem__(name)

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return super().__contains__(name)

    def __len__(self) -> int:
        load_plugins()
        return super().__len__()

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        load_plugins()
        return super().get(name, default)

    def values(self):  # type: ignore[override]
        load_plugins()
        return super().values()

    def items(self):  # type: ignore[override]
        load_plugins()
        return super().items()

    def keys(self):  # type: ignore[override]
        load_plugins()
        return super().keys()
