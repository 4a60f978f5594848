"""Model builders: turn an architecture (a plain value) into an ``nn.Module``.

A space names its builder with ``model:`` (default ``macro``). Every builder is a
``ModelBuilder`` in ``BUILDERS``, with the capabilities it declares (the task its networks are
for, a width multiplier, a genotype notation, latency units, a supernet's mixed edges, the
report's graph), so callers ask the descriptor instead of probing the module. The core builds
chains (``macro``) and cells (``nb201``, ``darts``); applications register theirs from their own
folders. ``raynas.testing.check_builder`` is the contract every registered builder passes.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Any

from raynas.errors import ConfigError, SpaceError, did_you_mean, show
from raynas.registry import Ref, Registry, load_ref
from raynas.space.space import Space


@dataclass(frozen=True)
class SpaceFlag:
    """A ``raynas search`` flag that a builder adds: it fixes one field of the space to the
    flag's value (``--backbone-weights PATH`` sets ``backbone_weights``), as if the space's YAML
    said so; a ``path`` is made absolute, for trials that run in other folders."""

    flag: str
    field: str
    metavar: str
    help: str
    path: bool = False


@dataclass(frozen=True)
class ModelBuilder:
    """``implementation`` (a ``Ref`` to a module or class) has ``check(space, origin)`` (is
    everything the space can produce buildable) and ``build(arch, input_shape, num_classes)``,
    plus what the capabilities promise: ``build(..., width=)`` with ``width``; ``describe``,
    ``parse`` and ``genotype_fields`` with ``genotype``; ``latency_units`` with
    ``latency_units``. ``mixed_edges`` is a ``Ref`` to a ``raynas.models.supernet.MixedEdges``
    class: the edges a weight-sharing supernet mixes, their candidate ops, and how the mixed
    network is built and an architecture read from it. ``example`` is a built-in space and an
    input shape that ``check_builder`` builds networks of; ``check_output`` is how it checks
    them where the task has no ``Problem`` (whose logits it checks itself)."""

    name: str
    implementation: Ref
    task: str = "classification"  # what its networks do: a name in raynas.estimation.TASKS
    example: tuple[str, tuple[int, ...]] = ("macro_cnn", (1, 8, 8))
    width: bool = False  # takes a channel multiplier (proxy tasks, --fidelity width)
    genotype: bool = False  # has a notation of its own (a NAS-Bench-201 string, a DARTS genotype)
    latency_units: bool = False  # lists its parts for the latency lookup table
    mixed_edges: Ref | None = None  # a MixedEdges class: supernets mix its ops (oneshot, darts)
    graph: Ref | None = None  # arch -> the report's graphs (raynas.report.graph)
    # (network, input_shape, num_classes) -> None: runs it as its task does, AssertionError
    # unless it returns what the task needs (a detector's losses and boxes)
    check_output: Ref | None = None
    flags: tuple[SpaceFlag, ...] = ()  # ``raynas search`` flags that fix a field of its spaces

    @property
    def module(self) -> Any:
        return load_ref(self.implementation)


BUILDERS: Registry[ModelBuilder] = Registry("model", "model")
register_builder = BUILDERS.register


def builder_of(space: Space) -> ModelBuilder:
    """The space's builder, or a one-line SpaceError naming the space's ``model:``."""
    builder = BUILDERS.get(space.model)
    if builder is None:
        raise SpaceError(f"{space.name}: model: unknown model {show(space.model)}"
                         f"{did_you_mean(space.model, BUILDERS)}; known: {', '.join(BUILDERS)}")
    return builder


def fix_fields(source: Any, fixed: dict[str, Any] | None) -> Any:
    """The space ``source`` (a name, a YAML path or a dict) with the fields its builder's flags
    fixed (``SearchConfig.fixed``) as constants, as a dict; ``source`` itself without any.
    A ConfigError for a flag that is not its builder's."""
    from raynas.space import read_space

    if not fixed:
        return source
    space, _ = read_space(source)
    own = {f.field for f in builder_of(space).flags}
    for field in fixed:
        if field not in own:
            flag, model = next(((f.flag, b.name) for b in BUILDERS.values() for f in b.flags
                                if f.field == field), (field, "?"))
            raise ConfigError(f"{flag}: only for spaces of model {model}; --space "
                              f"{space.name} is model {space.model}")
    document = copy.deepcopy(space.document)
    document["space"] = {**(document.get("space") or {}), **fixed}
    return document


def check_space(space: Space, origin: str) -> None:
    if space.model not in BUILDERS:
        raise SpaceError(f"{origin}: model: unknown model {show(space.model)}"
                         f"{did_you_mean(space.model, BUILDERS)}; known: {', '.join(BUILDERS)}")
    BUILDERS[space.model].module.check(space, origin)


def build_model(space: Space, arch: dict[str, Any], input_shape: tuple[int, ...],
                num_classes: int, width: float = 1.0) -> Any:
    """``width``: a channel multiplier (a proxy task's reduced channels, see ``ProxyTask``)."""
    builder = builder_of(space)
    if width == 1:
        return builder.module.build(arch, input_shape, num_classes)
    check_width(space)
    return builder.module.build(arch, input_shape, num_classes, width=width)


def check_width(space: Space) -> None:
    """SpaceError unless the space's builder takes a width multiplier."""
    if not builder_of(space).width:
        raise SpaceError(f"{space.name}: model {space.model!r} has no width multiplier "
                         "(--proxy-task width, --fidelity width); use the resolution or data")


def describe(space: Space, arch: dict[str, Any]) -> str | None:
    """The architecture in its model's own notation (a NAS-Bench-201 string, a DARTS genotype),
    or None when the model has none."""
    builder = builder_of(space)
    return builder.module.describe(arch) if builder.genotype else None


def check_genotype_space(space: Space) -> None:
    """SpaceError unless a genotype identifies an architecture of ``space``: its model has a
    notation and the space searches nothing the notation leaves out (e.g. ``train.lr``)."""
    builder = builder_of(space)
    if not builder.genotype:
        raise SpaceError(f"{space.name}: model {space.model!r} has no genotype notation")
    fields = builder.module.genotype_fields
    searched = sorted({d.key.split(".")[0] for d in space.decisions()} - set(fields))
    if searched:
        raise SpaceError(f"{space.name}: space.{searched[0]}: searched, but a genotype records "
                         f"only {', '.join(fields)}")


def from_genotype(space: Space, text: str) -> dict[str, Any]:
    """The architecture of ``space`` that ``describe`` writes as ``text``; SpaceError if
    ``text`` is malformed or outside the space (see ``check_genotype_space``)."""
    check_genotype_space(space)
    constants = space.sample(random.Random(0))  # every field but the genotype's is a constant
    return space.validate({**constants, **builder_of(space).module.parse(text)})


def latency_units(space: Any, arch: dict[str, Any], input_shape: tuple[int, ...],
                  num_classes: int) -> list[Any] | None:
    """The units of ``arch`` from its space's builder, or None if the builder cannot list them
    (its latency is then only measured)."""
    builder = BUILDERS.get(space.model)
    if builder is None or not builder.latency_units:
        return None
    return builder.module.latency_units(arch, input_shape, num_classes)


for _builder in (
    ModelBuilder("macro", "raynas.models.macro", width=True, latency_units=True,
                 graph="raynas.report.graph:macro_graph"),
    ModelBuilder("nb201", "raynas.models.cell:NB201Builder", example=("nb201_cell", (3, 8, 8)),
                 width=True, genotype=True, mixed_edges="raynas.models.cell:NB201Edges",
                 graph="raynas.report.graph:nb201_graph"),
    ModelBuilder("darts", "raynas.models.cell:DartsBuilder", example=("darts_cell", (3, 8, 8)),
                 width=True, genotype=True, mixed_edges="raynas.models.cell:DartsEdges",
                 graph="raynas.report.graph:darts_graph"),
):
    register_builder(_builder)
