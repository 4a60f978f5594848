"""User-facing errors: one hierarchy so the CLI can print one line and exit 2."""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable
from typing import Any


class RaynasError(Exception):
    """An error caused by the user's input or environment, not by a bug in raynas."""


class SpaceError(RaynasError):
    """A search space (YAML or dict) or an architecture is invalid."""


class DataError(RaynasError):
    """A dataset cannot be found, read or used."""


class ConfigError(RaynasError):
    """A search setting (strategy, scheduler, objective, resources, …) is invalid."""


class TrackingError(RaynasError):
    """The MLflow tracking store cannot take what a search wrote (yet)."""


class SearchInterrupted(RaynasError):
    """A search was stopped (Ctrl-C, SIGTERM) before it finished; ``--resume`` finishes it."""


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """A ' (did you mean X?)' suffix for typos, or '' when nothing is close: the shortest
    option the word begins (``val_acc`` -> ``val_accuracy``, not the closer-spelt ``val_auc``),
    else the closest by difflib."""
    word, names = str(word), [str(o) for o in options]
    begun = sorted((n for n in names if len(word) >= 3 and n.startswith(word) and n != word),
                   key=len)
    close = begun[:1] or difflib.get_close_matches(word, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60


def show(value: Any) -> str:
    """A short one-line repr of a user's value for an error message (a fuzzed 5,000-digit op
    name must not make a 5,000-character line)."""
    try:
        return _REPR.repr(value)
    except ValueError:  # an int too long to print
        return f"<{type(value).__name__} too large to show>"
