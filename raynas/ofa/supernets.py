"""The elastic supernets Once-for-All trains: one per model (a space's ``model:``), registered by
the application that owns the model (``ofa`` here, ``transformer`` by the sequences plug-in), so
``raynas ofa train`` and ``raynas specialize`` run on any of them without naming it.

A supernet class takes ``(space, input_shape, num_classes)`` and offers ``space``, ``choices``
(``arch(pick)``, ``largest()``, ``smallest()``), ``use(arch)``, ``extract(arch)`` (a stand-alone
network computing what the supernet computes with ``use(arch)``), ``LR`` (Adam's rate in
``full`` and in the shrinking phases), ``PHASES`` (each phase of
progressive shrinking, first ``full``, and the dimensions it samples), ``ALWAYS`` (dimensions
sampled in every phase, the largest network's too) and ``start_phase(phase)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raynas.errors import ConfigError
from raynas.registry import Ref, Registry, load_ref
from raynas.space import Space


@dataclass(frozen=True)
class ElasticModel:
    """``name``: the model (``model:`` of a space); ``supernet``: its elastic supernet class;
    ``ranks``: the input ranks it takes (3: images (C, H, W)), ``inputs`` says which in words."""

    name: str
    supernet: Ref
    ranks: frozenset[int]
    inputs: str


ELASTIC: Registry[ElasticModel] = Registry("--space", "elastic model")
register_elastic = ELASTIC.register


def elastic_model(space: Space) -> ElasticModel:
    """The space's elastic model, or one line naming the models that have one."""
    entry = ELASTIC.get(space.model)
    if entry is None:
        raise ConfigError(f"--space {space.name}: Once-for-All needs a space of a model with an "
                          f"elastic supernet ({', '.join(ELASTIC)}, e.g. ofa_mbv3 or "
                          f"transformer_elastic), not model {space.model!r}")
    return entry


def supernet_of(space: Space, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """A fresh elastic supernet of ``space`` for inputs of ``input_shape``."""
    entry = elastic_model(space)
    if len(input_shape) not in entry.ranks:
        raise ConfigError(f"--space {space.name}: the {entry.name} supernet takes "
                          f"{entry.inputs}, not inputs shaped {tuple(input_shape)}")
    return load_ref(entry.supernet)(space, input_shape, num_classes)
