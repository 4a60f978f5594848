"""Model builders: turn an architecture (a plain value) into an ``nn.Module``.

A space names its builder with ``model:`` (default ``macro``); the builder also checks at load
time that everything the space can produce is buildable.
"""

from __future__ import annotations

import random
from typing import Any

from torch import nn

from raynas.errors import SpaceError, did_you_mean
from raynas.models import detection, elastic, macro, unet
from raynas.models.cell import darts, nb201
from raynas.ops import Unit
from raynas.space.space import Space

BUILDERS = {"macro": macro, "nb201": nb201, "darts": darts, "unet3d": unet,
            "ofa": elastic, "detection": detection}


def _builder(model: str, origin: str):
    if model not in BUILDERS:
        raise SpaceError(f"{origin}: model: unknown model {model!r}{did_you_mean(model, BUILDERS)};"
                         f" known: {', '.join(BUILDERS)}")
    return BUILDERS[model]


def check_space(space: Space, origin: str) -> None:
    _builder(space.model, origin).check(space, origin)


def build_model(space: Space, arch: dict[str, Any], input_shape: tuple[int, ...],
                num_classes: int, width: float = 1.0) -> nn.Module:
    """``width``: a channel multiplier (a proxy task's reduced channels, see ``ProxyTask``)."""
    if width == 1:
        return _builder(space.model, space.name).build(arch, input_shape, num_classes)
    check_width(space)
    return _builder(space.model, space.name).build(arch, input_shape, num_classes, width=width)


def check_width(space: Space) -> None:
    """SpaceError unless the space's builder takes a width multiplier."""
    import inspect

    if "width" not in inspect.signature(_builder(space.model, space.name).build).parameters:
        raise SpaceError(f"{space.name}: model {space.model!r} has no width multiplier "
                         "(--proxy-task width, --fidelity width); use the resolution or data")


def describe(space: Space, arch: dict[str, Any]) -> str | None:
    """The architecture in its model's own notation (a NAS-Bench-201 string, a DARTS genotype),
    or None when the model has none."""
    text = getattr(_builder(space.model, space.name), "describe", None)
    return text(arch) if text else None


def check_genotype_space(space: Space) -> None:
    """SpaceError unless a genotype identifies an architecture of ``space``: its model has a
    notation and the space searches nothing the notation leaves out (e.g. ``train.lr``)."""
    builder = _builder(space.model, space.name)
    if not hasattr(builder, "parse"):
        raise SpaceError(f"{space.name}: model {space.model!r} has no genotype notation")
    searched = sorted({d.key.split(".")[0] for d in space.decisions()}
                      - set(builder.genotype_fields))
    if searched:
        raise SpaceError(f"{space.name}: space.{searched[0]}: searched, but a genotype records "
                         f"only {', '.join(builder.genotype_fields)}")


def from_genotype(space: Space, text: str) -> dict[str, Any]:
    """The architecture of ``space`` that ``describe`` writes as ``text``; SpaceError if
    ``text`` is malformed or outside the space (see ``check_genotype_space``)."""
    check_genotype_space(space)
    constants = space.sample(random.Random(0))  # every field but the genotype's is a constant
    return space.validate({**constants, **_builder(space.model, space.name).parse(text)})


def latency_units(space: Any, arch: dict[str, Any], input_shape: tuple[int, ...],
                  num_classes: int) -> list[Unit] | None:
    """The units of ``arch`` from its space's builder, or None if the builder cannot list them
    (its latency is then only measured)."""
    from raynas.models import BUILDERS

    units = getattr(BUILDERS.get(space.model), "latency_units", None)
    return units(arch, input_shape, num_classes) if units else None
