"""The search-space model: load a space from YAML or a dict and adapt it to Tune, Optuna and
our own searchers. See ``loader`` for the YAML syntax and ``space`` for the adapters."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from raynas.errors import SpaceError, did_you_mean
from raynas.space.loader import parse_document, read_yaml
from raynas.space.space import Arch, Decision, Space, arch_hash

__all__ = ["Arch", "Decision", "Space", "arch_hash", "builtin_spaces", "read_space"]


def builtin_dir() -> Path:
    """The folder of the YAML spaces that ship with raynas (``search_spaces/`` in the repo)."""
    return Path(str(resources.files("raynas.search_spaces")))


def builtin_spaces() -> dict[str, Path]:
    return {p.stem: p for p in sorted(builtin_dir().glob("*.yaml"))}


def read_space(source: str | Path | dict[str, Any] | Space) -> tuple[Space, str]:
    """A space from a built-in name, a YAML path or a dict, checked for its structure, and
    where it came from (for errors). ``raynas.estimation.load_space`` adds the checks of the
    builder and the trainer: use that one for a space a search will run on."""
    if isinstance(source, Space):
        return source, source.name
    if isinstance(source, dict):
        # Errors start with the space's name; one that cannot head a one-line error is not used.
        name = source.get("name")
        ok = isinstance(name, str) and name and name.isprintable()
        doc, origin = source, name if ok else "<dict>"
    else:
        path = Path(source)
        if not path.suffix and not path.exists():
            known = builtin_spaces()
            if str(source) not in known:
                raise SpaceError(
                    f"unknown search space {str(source)!r}{did_you_mean(str(source), known)}; "
                    f"built-in: {', '.join(known)} (or give a path to a YAML file)"
                )
            path = known[str(source)]
        doc, origin = read_yaml(path), str(path)
    name, model, description, root = parse_document(doc, origin)
    return Space(name, model, root, description, document=doc), origin


def space_yaml(space: Space) -> str:
    """The space as YAML text (logged with every search so results can be reproduced)."""
    return yaml.safe_dump(space.document, sort_keys=False)
