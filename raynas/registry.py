"""A registry of named entries that third parties extend: strategies, schedulers, dataset
kinds. One lookup for all, so an unknown name is the same one-line error everywhere."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from raynas.errors import ConfigError, did_you_mean


class Named(Protocol):
    name: str


T = TypeVar("T", bound=Named)


class Registry(dict[str, T], Generic[T]):
    """Entries by name, in the order they were registered."""

    def __init__(self, flag: str, kind: str) -> None:
        super().__init__()
        self.flag, self.kind = flag, kind

    def register(self, entry: T) -> T:
        """Add (or replace) an entry: a search in this process can name it at once."""
        self[entry.name] = entry
        return entry

    def find(self, name: str) -> T:
        """The entry called ``name``, or a ``ConfigError`` naming the flag and close names."""
        if name not in self:
            raise ConfigError(f"{self.flag}: unknown {self.kind} {name!r}"
                              f"{did_you_mean(name, self)}; known: {', '.join(self)}")
        return self[name]
