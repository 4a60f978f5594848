"""Model builders: turn an architecture (a plain value) into an ``nn.Module``.

A space names its builder with ``model:`` (default ``macro``); the builder also checks at load
time that everything the space can produce is buildable.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from raynas.errors import SpaceError, did_you_mean
from raynas.models import macro
from raynas.space.space import Space

BUILDERS = {"macro": macro}


def _builder(model: str, origin: str):
    if model not in BUILDERS:
        raise SpaceError(f"{origin}: model: unknown model {model!r}{did_you_mean(model, BUILDERS)};"
                         f" known: {', '.join(BUILDERS)}")
    return BUILDERS[model]


def check_space(space: Space, origin: str) -> None:
    _builder(space.model, origin).check(space, origin)


def build_model(space: Space, arch: dict[str, Any], input_shape: tuple[int, ...],
                num_classes: int) -> nn.Module:
    return _builder(space.model, space.name).build(arch, input_shape, num_classes)
