"""One-shot supernets: every candidate op on every edge of a cell network, weights shared by all
the architectures of a cell space (``nb201`` and ``darts`` models, see ``models.cell``).

One module serves both weight-sharing families: with a single path set (``use(arch)``) each
edge runs only its chosen op, as SPOS/ENAS train and score sub-architectures; without one each
edge returns the softmax(alpha)-weighted sum of its ops, the continuous relaxation DARTS
optimises. alpha is shared by all cells of a type, as in DARTS. Written here because no
maintained library builds supernets over these cell skeletons (NNI's retiarii, the usual
source, is archived).

The 3-D U-Net (``unet3d``) has a supernet too: every level's op is a mixed op over the
candidate ops, one alpha row per level shared by the level's encoder and decoder op, so DARTS
searches the per-level ops of a segmentation network of fixed depth and widths.
"""

from __future__ import annotations

import random
import re
from typing import Any

import torch
from torch import nn

from raynas.errors import ConfigError
from raynas.models import builder_of
from raynas.models.cell import (
    CELL_TYPES,
    DARTS_NODES,
    DARTS_OPS,
    NB201_EDGES,
    NB201_OPS,
    CellPlan,
    DartsNet,
    NB201Net,
    darts_pairs,
    nb201_field,
)
from raynas.ops import ALL_OPS
from raynas.space import Arch, Space

SKIP = "skip_connect"
NONE = "none"


class MixedOp(nn.Module):
    """One edge of a supernet: all candidate ops on the same input.

    ``choice`` says what runs: an int (one op: a single path) or a vector of weights, one per
    op (their weighted sum; a softmax of alpha in DARTS, so alpha gets gradients). The supernet
    sets it before each forward: the cell classes call an edge with its input only.
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


def _options(space: Space, fields: list[str], table: dict[str, Any]) -> list[str]:
    """The ops a set of fields can take, in the op table's order."""
    found = {op for f in fields for op in space.values(f) or ()}
    return [name for name in table if name in found]


class Supernet(nn.Module):
    """The supernet of a cell space. ``edges[kind]`` lists the (node, input) edges of a cell
    type in DARTS's order (node-major), which is also the row order of ``alpha[kind]``."""

    def __init__(self, space: Space, input_shape: tuple[int, ...], num_classes: int,
                 seed: int = 0) -> None:
        super().__init__()
        check_supernet_space(space)
        self.space = space
        self.template = space.sample(random.Random(0))  # the constant, non-cell fields
        self.mixed: list[tuple[str, int, MixedOp]] = []  # (kind, row, edge) of every MixedOp
        if space.model == "nb201":
            self.edges = {"cell": list(NB201_EDGES)}
            self.ops = {"cell": _options(space, [f"cell.{nb201_field(j, i)}"
                                                 for j, i in NB201_EDGES], NB201_OPS)}
            self.net = NB201Net(self._edge("cell", NB201_OPS), input_shape, num_classes,
                                self.template["channels"], self.template["cells_per_stage"])
        elif space.model == "unet3d":
            levels = len(self.template["levels"])
            self.edges = {"levels": [(i,) for i in range(levels)]}
            self.ops = {"levels": _options(space, ["levels.op"], ALL_OPS)}
            self.net = builder_of(space).module.UNet3D(self.template, input_shape, num_classes,
                                                       level_op=self._level_edge)
        else:
            plans, self.ops = {}, {}
            self.edges = {kind: [(n, s) for n in DARTS_NODES for s in range(n)]
                          for kind in CELL_TYPES}
            for kind in CELL_TYPES:
                self.ops[kind] = _options(space, [f"{kind}.node{n}.{side}" for n in DARTS_NODES
                                                  for side in ("op_a", "op_b")], DARTS_OPS)
                plans[kind] = CellPlan([range(n) for n in DARTS_NODES],
                                       self._edge(kind, DARTS_OPS))
            t = self.template
            self.net = DartsNet(plans["normal"], plans["reduce"], input_shape, num_classes,
                                t["channels"], t["layers"], t.get("stem_multiplier", 3))
        generator = torch.Generator().manual_seed(seed)
        self.alpha = nn.ParameterDict({
            kind: nn.Parameter(1e-3 * torch.randn(len(self.edges[kind]), len(self.ops[kind]),
                                                  generator=generator))
            for kind in self.edges})
        self.path: dict[str, list[int]] | None = None

    def _edge(self, kind: str, table: dict[str, Any]):
        def make(node: int, source: int, channels: int, stride: int) -> MixedOp:
            edge = MixedOp({op: table[op](channels, channels, stride) for op in self.ops[kind]})
            self.mixed.append((kind, self.edges[kind].index((node, source)), edge))
            return edge

        return make

    def _level_edge(self, level: int, c_in: int, c_out: int, stride: int) -> MixedOp:
        """A U-Net level's op as a mixed op (its encoder and decoder op share alpha's row)."""
        edge = MixedOp({op: ALL_OPS[op](c_in, c_out, stride, 3) for op in self.ops["levels"]})
        self.mixed.append(("levels", level, edge))
        return edge

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
    def path_of(self, arch: Arch) -> dict[str, list[int]]:
        """The op index on every edge for an architecture of the space; in a DARTS cell the
        edges a node does not read carry ``none``."""
        self.space.validate(arch)
        if self.space.model == "unet3d":
            return {"levels": [self.ops["levels"].index(level["op"]) for level in arch["levels"]]}
        if self.space.model == "nb201":
            ops = self.ops["cell"]
            return {"cell": [ops.index(arch["cell"][nb201_field(j, i)])
                             for j, i in self.edges["cell"]]}
        path = {}
        for kind in CELL_TYPES:
            ops, rows = self.ops[kind], self.edges[kind]
            if NONE not in ops:
                raise ConfigError(f"space {self.space.name}: a DARTS supernet needs the 'none' op "
                                  f"among {kind}'s ops (it stands for the edges a node skips)")
            chosen = [ops.index(NONE)] * len(rows)
            for node in DARTS_NODES:
                spec = arch[kind][f"node{node}"]
                a, b = (int(s) for s in spec["inputs"].split(","))
                chosen[rows.index((node, a))] = ops.index(spec["op_a"])
                chosen[rows.index((node, b))] = ops.index(spec["op_b"])
            path[kind] = chosen
        return path

    def derive(self) -> Arch:
        """The discrete architecture alpha encodes: the argmax op of every NAS-Bench-201 edge;
        in a DARTS cell, per node the two incoming edges whose best non-``none`` op is
        strongest, each with that op (DARTS's ``genotype()``)."""
        weights = {kind: torch.softmax(a.detach(), dim=-1).cpu() for kind, a in self.alpha.items()}
        if self.space.model == "unet3d":
            ops = self.ops["levels"]
            levels = [{**level, "op": ops[int(row.argmax())]}
                      for level, row in zip(self.template["levels"], weights["levels"],
                                            strict=True)]
            return self.space.validate({**self.template, "levels": levels})
        if self.space.model == "nb201":
            cell = derive_nb201(weights["cell"], self.ops["cell"])
            return self.space.validate({**self.template, "cell": cell})
        cells = {kind: derive_darts(weights[kind], self.ops[kind]) for kind in CELL_TYPES}
        return self.space.validate({**self.template, **cells})

    def alpha_table(self) -> dict[str, dict[str, dict[str, float]]]:
        """softmax(alpha) as ``{kind: {edge: {op: weight}}}`` (edge ``J_I``: into J from I; a
        U-Net's: the level)."""
        return {kind: {"_".join(map(str, edge)): dict(zip(self.ops[kind], row.tolist(),
                                                          strict=True))
                       for edge, row in zip(self.edges[kind],
                                                   torch.softmax(a.detach(), -1), strict=True)}
                for kind, a in self.alpha.items()}


def derive_nb201(weights: torch.Tensor, ops: list[str]) -> dict[str, str]:
    """Rows in ``NB201_EDGES`` order -> ``{edge_j_i: argmax op}`` (``none`` included, as in the
    NAS-Bench-201 paper's DARTS baseline)."""
    return {nb201_field(j, i): ops[int(row.argmax())]
            for (j, i), row in zip(NB201_EDGES, weights, strict=True)}


def derive_darts(weights: torch.Tensor, ops: list[str]) -> dict[str, dict[str, str]]:
    """Rows in DARTS's edge order (node 2: inputs 0, 1; node 3: 0, 1, 2; ...) -> the cell's
    ``node{k}: {inputs, op_a, op_b}``: per node the top-2 incoming edges by their strongest
    non-``none`` op (DARTS's ``_parse``)."""
    keep = [k for k, name in enumerate(ops) if name != NONE]
    cell, row = {}, 0
    for node in DARTS_NODES:
        block = weights[row : row + node]
        best = block[:, keep].max(dim=1)
        top = sorted(sorted(range(node), key=lambda s: -float(best.values[s]))[:2])
        a, b = (ops[keep[int(best.indices[s])]] for s in top)
        pair = f"{top[0]},{top[1]}"
        assert pair in darts_pairs(node)
        cell[f"node{node}"] = {"inputs": pair, "op_a": a, "op_b": b}
        row += node
    return cell


def skip_count(arch: Arch, space: Space) -> int:
    """Skip connections in the architecture's cell (the normal cell for DARTS): the count
    DARTS collapses to (Zela et al. 2020; DARTS+, Liang et al. 2019)."""
    if space.model == "unet3d":  # no parameter-free op to collapse to: its ops all convolve
        return 0
    if space.model == "nb201":
        return sum(op == SKIP for op in arch["cell"].values())
    return sum(spec[side] == SKIP for spec in arch["normal"].values()
               for side in ("op_a", "op_b"))


def check_supernet_space(space: Space) -> None:
    """A supernet shares one network skeleton: only the cells (a U-Net's level ops) may be
    searched."""
    if space.model not in ("nb201", "darts", "unet3d"):
        raise ConfigError(f"--space {space.name}: weight sharing needs a cell space (model nb201 "
                          f"or darts, e.g. nb201_cell, darts_cell) or a unet3d space, not model "
                          f"{space.model!r}")
    cells = {"nb201": r"cell\.", "unet3d": r"levels\.\d+\.op$"}.get(
        space.model, "|".join(rf"{k}\." for k in CELL_TYPES))
    for decision in space.decisions():
        options = decision.param.options()
        if not re.match(cells, decision.key) and (options is None or len(options) > 1):
            raise ConfigError(f"--space {space.name}: {decision.key} is searched, but a "
                              "supernet shares one skeleton: only the cells may vary")
