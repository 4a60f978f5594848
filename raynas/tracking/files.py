"""The small JSON files a search resumes from (``raynas.json``, ``mlflow-applied.json``): written
whole or not at all, with the copy they replace kept beside them, and read back from that copy
when the newest one is damaged.

Tune's own ``tuner.pkl`` has no way back from a truncated copy (ray-project/ray#58179: an
``EOFError`` ends every resume), and a power cut after a plain ``write_text`` can leave an
empty file. Python's standard library has no atomic file write (``os.replace`` is only its
last step) and the packages that wrap one keep no previous copy, hence these few lines.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raynas.errors import ConfigError

PREVIOUS = ".prev"  # raynas.json.prev: the copy the last write replaced


def previous(path: Path) -> Path:
    return path.with_name(path.name + PREVIOUS)


def write_atomic(path: Path, text: str) -> None:
    """Write ``path``: a temporary file, flushed to the disk, renamed over it (atomic on
    POSIX), the folder flushed too so the rename survives a power cut. The replaced copy stays
    as ``NAME.prev``, linked there first, so that ``path`` itself never goes missing."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    if path.exists():
        link = path.with_name(f".{path.name}{PREVIOUS}.tmp")
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        os.link(path, link)
        os.replace(link, previous(path))
    os.replace(temporary, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def read_json(path: Path, warn: Callable[[str], None]) -> dict[str, Any] | None:
    """``path`` parsed, or its previous copy if ``path`` is missing, truncated or not JSON
    (``warn`` says in one line what was lost); None if neither copy exists. Raises a one-line
    ConfigError if the file is damaged and no previous copy helps."""
    try:
        return _parse(path)
    except FileNotFoundError:
        reason = "missing"
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        reason = f"damaged: {str(exc).splitlines()[0][:120]}"
    try:
        found = _parse(previous(path))
    except FileNotFoundError:
        if reason == "missing":
            return None
        raise ConfigError(f"{path}: {reason}, and there is no previous copy to resume from"
                          ) from None
    except ValueError:
        raise ConfigError(f"{path}: {reason}, and so is its previous copy "
                          f"{previous(path).name}") from None
    warn(f"warning: {path} is {reason}; resuming from its previous copy "
         f"({previous(path).name}): its last change is lost")
    return found


def _parse(path: Path) -> dict[str, Any]:
    found = json.loads(path.read_bytes())
    if not isinstance(found, dict):
        raise ValueError(f"a JSON {type(found).__name__}, not an object")
    return found
