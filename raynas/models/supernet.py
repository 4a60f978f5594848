"""One-shot supernets: every candidate op on every searched edge of a network, weights shared
by all the architectures of the space.

One module serves both weight-sharing families: with a single path set (``use(arch)``) each
edge runs only its chosen op, as SPOS/ENAS train and score sub-architectures; without one each
edge returns the softmax(alpha)-weighted sum of its ops, the continuous relaxation DARTS
optimises. Written here because no maintained library builds supernets over these skeletons
(NNI's retiarii, the usual source, is archived).

The supernet knows no model: a builder that can be mixed declares ``ModelBuilder.mixed_edges``,
a ``MixedEdges`` class written next to the builder (the NAS-Bench-201 and DARTS cells in
``models.cell``, the 3-D U-Net's levels in its module). It lists the edges and their candidate
ops, builds the builder's network with a mixed op on every edge, and maps architectures to and
from paths (op indices per edge).
"""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from raynas.errors import ConfigError
from raynas.models import BUILDERS, builder_of
from raynas.registry import load_ref
from raynas.space import Arch, Space

#: Where an edge sits in its network: ``(node, input)`` in a cell, ``(level,)`` in a U-Net.
Edge = tuple[int, ...]
#: An op's name -> a fresh module of that op for one edge (the edge's channels and stride).
Candidate = Callable[[str], nn.Module]
#: (kind, edge, candidate) -> the module the network puts on the edge (the supernet's mixed op).
Mix = Callable[[str, Edge, Candidate], nn.Module]
Path = dict[str, list[int]]  # per kind, the op index on each of its edges (in ``edges`` order)


class MixedOp(nn.Module):
    """One edge of a supernet: all candidate ops on the same input.

    ``choice`` says what runs: an int (one op: a single path) or a vector of weights, one per
    op (their weighted sum; a softmax of alpha in DARTS, so alpha gets gradients). The supernet
    sets it before each forward: the networks call an edge with its input only.
    """

    def __init__(self, ops: dict[str, nn.Module]) -> None:
        super().__init__()
        self.names = list(ops)
        self.ops = nn.ModuleList(ops.values())
        self.choice: int | torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.choice, int):
            return self.ops[self.choice](x)
        if self.choice is None:
            raise RuntimeError("MixedOp: no path or weights set (Supernet.forward sets them)")
        return sum(w * op(x) for w, op in zip(self.choice, self.ops, strict=True))


class MixedEdges(ABC):
    """What a builder tells a supernet of a space (``ModelBuilder.mixed_edges``).

    Edges come in kinds (NAS-Bench-201's one cell, DARTS's normal and reduction cells, a U-Net's
    levels): each kind is one alpha matrix, shared by every copy of its edges in the network,
    with a row per edge (``edges[kind]``) and a column per candidate op (``ops[kind]``). The
    skeleton around the edges is the space's constants (``template``), which is why only the
    decisions ``searched`` matches may vary.
    """

    #: the decisions (a regex on their keys) a supernet mixes; every other one must be constant
    searched: ClassVar[str]
    #: a built-in space a supernet takes, where the builder's ``example`` searches more
    example: ClassVar[str | None] = None

    def __init__(self, space: Space) -> None:
        self.space = space
        self.template = space.sample(random.Random(0))  # the constants around the edges
        self.edges: dict[str, list[Edge]] = {}
        self.ops: dict[str, list[str]] = {}

    def candidates(self, fields: Sequence[str], table: dict[str, Any]) -> list[str]:
        """The ops a set of fields can take, in the op table's order."""
        found = {op for f in fields for op in self.space.values(f) or ()}
        return [name for name in table if name in found]

    @abstractmethod
    def network(self, input_shape: tuple[int, ...], num_classes: int, mix: Mix) -> nn.Module:
        """The builder's network of ``template`` with ``mix(kind, edge, candidate)`` on every
        edge (called once per copy of an edge)."""

    @abstractmethod
    def path(self, arch: Arch) -> Path:
        """The op index on every edge for a (valid) architecture of the space."""

    @abstractmethod
    def derive(self, weights: dict[str, torch.Tensor]) -> Arch:
        """The discrete architecture softmax(alpha) (``weights[kind]``, edges x ops) encodes."""

    @abstractmethod
    def skip_count(self, arch: Arch) -> int:
        """The parameter-free skip connections in ``arch`` that DARTS collapses to (Zela et
        al. 2020; DARTS+, Liang et al. 2019): its collapse guard counts them."""


def mixed_edges(space: Space) -> type[MixedEdges]:
    """The space's builder's ``MixedEdges``; ConfigError if the builder has none."""
    builder = builder_of(space)
    if builder.mixed_edges is None:
        mixable = [b.name for b in BUILDERS.values() if b.mixed_edges is not None]
        raise ConfigError(f"--space {space.name}: weight sharing needs a cell space (a model "
                          f"whose edges a supernet mixes: {', '.join(mixable)}), not model "
                          f"{space.model!r}")
    return load_ref(builder.mixed_edges)


def check_supernet_space(space: Space) -> None:
    """A supernet shares one network skeleton: only its mixed edges (the cells, a U-Net's level
    ops) may be searched."""
    searched = mixed_edges(space).searched
    for decision in space.decisions():
        options = decision.param.options()
        if not re.match(searched, decision.key) and (options is None or len(options) > 1):
            raise ConfigError(f"--space {space.name}: {decision.key} is searched, but a "
                              "supernet shares one skeleton: only the cells may vary")


def skip_count(arch: Arch, space: Space) -> int:
    """Skip connections in the architecture (see ``MixedEdges.skip_count``)."""
    return mixed_edges(space)(space).skip_count(arch)


class Supernet(nn.Module):
    """The supernet of a space whose builder mixes edges. ``edges[kind]`` lists a kind's edges
    in the order of the rows of ``alpha[kind]``, ``ops[kind]`` its candidate ops (columns)."""

    def __init__(self, space: Space, input_shape: tuple[int, ...], num_classes: int,
                 seed: int = 0) -> None:
        super().__init__()
        check_supernet_space(space)
        self.space = space
        self.layout = mixed_edges(space)(space)
        self.edges, self.ops = self.layout.edges, self.layout.ops
        self.mixed: list[tuple[str, int, MixedOp]] = []  # (kind, row, edge) of every MixedOp
        self.net = self.layout.network(input_shape, num_classes, self._mix)
        generator = torch.Generator().manual_seed(seed)
        self.alpha = nn.ParameterDict({
            kind: nn.Parameter(1e-3 * torch.randn(len(self.edges[kind]), len(self.ops[kind]),
                                                  generator=generator))
            for kind in self.edges})
        self.path: Path | None = None

    def _mix(self, kind: str, edge: Edge, candidate: Candidate) -> MixedOp:
        mixed = MixedOp({op: candidate(op) for op in self.ops[kind]})
        self.mixed.append((kind, self.edges[kind].index(edge), mixed))
        return mixed

    def weights(self) -> list[nn.Parameter]:
        """The shared network weights (everything but alpha)."""
        return [p for name, p in self.named_parameters() if not name.startswith("alpha.")]

    def use(self, arch: Arch | None) -> Supernet:
        """Run the single path of ``arch`` from now on; None: the alpha-weighted mixture."""
        self.path = None if arch is None else self.path_of(arch)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.path is None:
            mix = {kind: torch.softmax(a, dim=-1) for kind, a in self.alpha.items()}
            for kind, row, edge in self.mixed:
                edge.choice = mix[kind][row]
        else:
            for kind, row, edge in self.mixed:
                edge.choice = self.path[kind][row]
        return self.net(x)

    # --- architectures <-> paths ----------------------------------------------------------
    def path_of(self, arch: Arch) -> Path:
        """The op index on every edge for an architecture of the space."""
        return self.layout.path(self.space.validate(arch))

    def derive(self) -> Arch:
        """The discrete architecture alpha encodes (e.g. DARTS's ``genotype()``)."""
        weights = {kind: torch.softmax(a.detach(), dim=-1).cpu() for kind, a in self.alpha.items()}
        return self.space.validate(self.layout.derive(weights))

    def alpha_table(self) -> dict[str, dict[str, dict[str, float]]]:
        """softmax(alpha) as ``{kind: {edge: {op: weight}}}`` (edge ``J_I``: into J from I; a
        U-Net's: the level)."""
        return {kind: {"_".join(map(str, edge)): dict(zip(self.ops[kind], row.tolist(),
                                                          strict=True))
                       for edge, row in zip(self.edges[kind],
                                            torch.softmax(a.detach(), -1), strict=True)}
                for kind, a in self.alpha.items()}
