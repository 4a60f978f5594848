"""Cell-based networks: NAS-Bench-201 (Dong & Yang 2020) and DARTS (Liu et al. 2019).

A cell is a small DAG whose edges carry operations; the network stacks copies of one searched
cell. The ops and skeletons follow the papers' reference code (``xautodl`` for NAS-Bench-201,
``quark0/darts`` for DARTS) so a genotype means the same network here as there. They are written
here because no maintained library ships them as reusable modules (torchvision has neither
ReLU-Conv-BN ordering nor the cell DAGs).

Networks take each edge's module from a factory ``edge(node, input, channels, stride)``, so the
same classes build a discrete architecture (one op per edge, ``nb201``/``darts`` below) or a
one-shot supernet (a mixed op on every edge: ``NB201Edges``/``DartsEdges``, the builders'
``mixed_edges``).

NAS-Bench-201's ops and skeleton also run on sequences shaped (C, L) (MNIST-1D): every conv,
pool and BatchNorm is then its 1-D counterpart (``dims=1``), a 3x3 conv a length-3 one. Its
edges also take any op of the registry (``raynas.ops.OPS``: the core's convolutions, and the
attention and recurrent ops an application registers), so a supernet (DARTS, one-shot) mixes
attention with convolutions, identity and zero on the same edges.

Two deviations from the reference code, both only for odd feature-map sizes (CIFAR's 32x32
never has them, 8x8 digits and 28x28 MNIST can): ``FactorizedReduce`` pads as NAS-Bench-201's
does (DARTS's fails on odd sizes), and the residual reduction block pools with ``ceil_mode``.
"""

from __future__ import annotations

import ast
import itertools
from collections import namedtuple
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from raynas.errors import ConfigError, SpaceError, did_you_mean, show
from raynas.models.supernet import Mix, MixedEdges, Path
from raynas.ops import OPS, Op
from raynas.ops.blocks import Zero
from raynas.space.space import Arch, Space

OpFactory = Callable[..., nn.Module]  # (c_in, c_out, stride, dims=2) -> module
EdgeFactory = Callable[[int, int, int, int], nn.Module]  # (node, input, channels, stride)


# --- operations ----------------------------------------------------------------------------
CONV = {1: nn.Conv1d, 2: nn.Conv2d}
NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}
POOL = {("max", 1): nn.MaxPool1d, ("max", 2): nn.MaxPool2d,
        ("avg", 1): nn.AvgPool1d, ("avg", 2): nn.AvgPool2d}
GLOBAL_POOL = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d}


def relu_conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, dims: int = 2) -> nn.Sequential:
    """ReLU-Conv-BN: the pre-activation order both benchmarks use (torchvision's blocks are
    Conv-BN-ReLU)."""
    return nn.Sequential(
        nn.ReLU(inplace=False),
        CONV[dims](c_in, c_out, kernel, stride, padding, dilation, bias=False),
        NORM[dims](c_out),
    )


class FactorizedReduce(nn.Module):
    """Halve the resolution without losing every other pixel: two strided 1x1 convs, one
    shifted by a pixel, concatenated (DARTS). The pad makes odd sizes work (NAS-Bench-201)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2, dims: int = 2) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        halves = (c_out // 2, c_out - c_out // 2)
        self.convs = nn.ModuleList(CONV[dims](c_in, h, 1, stride, bias=False) for h in halves)
        self.dims = dims
        self.bn = NORM[dims](c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = nn.functional.pad(x, (0, 1) * self.dims)[(..., *[slice(1, None)] * self.dims)]
        return self.bn(torch.cat([self.convs[0](x), self.convs[1](shifted)], dim=1))


def sep_conv(k: int) -> OpFactory:
    """DARTS's separable conv: (ReLU, depthwise k x k, pointwise 1x1, BN) twice, the first
    strided."""

    def make(c_in: int, c_out: int, stride: int) -> nn.Module:
        return nn.Sequential(dil_conv(k, 1)(c_in, c_in, stride), dil_conv(k, 1)(c_in, c_out, 1))

    return make


def dil_conv(k: int, dilation: int) -> OpFactory:
    """DARTS's dilated separable conv: ReLU, dilated depthwise k x k, pointwise 1x1, BN."""

    def make(c_in: int, c_out: int, stride: int) -> nn.Module:
        padding = dilation * (k - 1) // 2
        return nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, k, stride, padding, dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )

    return make


def pool(kind: str) -> OpFactory:
    """3x3 pooling; a ReLU-Conv-BN 1x1 first when the channels change (NAS-Bench-201)."""

    def make(c_in: int, c_out: int, stride: int, dims: int = 2) -> nn.Module:
        layer = (POOL[kind, dims](3, stride, 1) if kind == "max"
                 else POOL[kind, dims](3, stride, 1, count_include_pad=False))
        return (layer if c_in == c_out
                else nn.Sequential(relu_conv_bn(c_in, c_out, 1, dims=dims), layer))

    return make


def skip(c_in: int, c_out: int, stride: int, dims: int = 2) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return FactorizedReduce(c_in, c_out, stride, dims)


def zero(c_in: int, c_out: int, stride: int, dims: int = 2) -> nn.Module:
    return Zero(c_out, stride)


def nor_conv(k: int) -> OpFactory:
    def make(c_in: int, c_out: int, stride: int, dims: int = 2) -> nn.Module:
        return relu_conv_bn(c_in, c_out, k, stride, k // 2, dims=dims)

    return make


SKIP = "skip_connect"
NONE = "none"

NB201_OPS: dict[str, OpFactory] = {
    "none": zero,
    "skip_connect": skip,
    "nor_conv_1x1": nor_conv(1),
    "nor_conv_3x3": nor_conv(3),
    "avg_pool_3x3": pool("avg"),
}


def nb201_ops() -> dict[str, OpFactory]:
    """What a NAS-Bench-201 edge can carry: the benchmark's five ops first (their table order
    is the supernet's), then every op of the registry that is not one of them by name."""
    return {**NB201_OPS, **{name: op for name, op in OPS.items() if name not in NB201_OPS}}


DARTS_OPS: dict[str, OpFactory] = {
    "none": zero,
    "max_pool_3x3": pool("max"),
    "avg_pool_3x3": pool("avg"),
    "skip_connect": skip,
    "sep_conv_3x3": sep_conv(3),
    "sep_conv_5x5": sep_conv(5),
    "dil_conv_3x3": dil_conv(3, 2),
    "dil_conv_5x5": dil_conv(5, 2),
}


def _image_channels(input_shape: tuple[int, ...], model: str) -> int:
    if len(input_shape) != 3:
        raise SpaceError(f"{model} model: cells need images shaped (C, H, W), got {input_shape}")
    return input_shape[0]


def nb201_dims(input_shape: tuple[int, ...]) -> int:
    """1 for sequences (C, L), 2 for images (C, H, W); SpaceError for anything else."""
    if len(input_shape) not in (2, 3):
        raise SpaceError(f"nb201 model: cells need images (C, H, W) or sequences (C, L), got "
                         f"{input_shape}")
    return len(input_shape) - 1


# --- NAS-Bench-201 -------------------------------------------------------------------------
NB201_NODES = 4
NB201_EDGES = tuple((j, i) for j in range(1, NB201_NODES) for i in range(j))  # (to, from)


def nb201_field(j: int, i: int) -> str:
    """The architecture field of the edge into node ``j`` from node ``i``."""
    return f"edge_{j}_{i}"


class NB201Cell(nn.Module):
    """Node j = sum over i < j of edge(j, i)(node i); the cell's output is the last node."""

    def __init__(self, edge: EdgeFactory, channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleDict({nb201_field(j, i): edge(j, i, channels, 1)
                                    for j, i in NB201_EDGES})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for j in range(1, NB201_NODES):
            nodes.append(sum(self.edges[nb201_field(j, i)](nodes[i]) for i in range(j)))
        return nodes[-1]


class ResidualReduction(nn.Module):
    """NAS-Bench-201's reduction block: a stride-2 ResNet basic block (ReLU-Conv-BN x2) plus an
    avg-pool + 1x1 conv shortcut, doubling the channels."""

    def __init__(self, c_in: int, c_out: int, dims: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(relu_conv_bn(c_in, c_out, 3, 2, 1, dims=dims),
                                  relu_conv_bn(c_out, c_out, 3, 1, 1, dims=dims))
        self.shortcut = nn.Sequential(POOL["avg", dims](2, 2, ceil_mode=True),
                                      CONV[dims](c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.body(x)


class NB201Net(nn.Module):
    """The benchmark's skeleton: stem (3x3 conv + BN) -> C channels, three stages of N cells
    with residual reductions between them (C, 2C, 4C), BN-ReLU, global pool, linear. On a
    sequence (C, L) every layer is 1-D (``edge`` must make 1-D ops then: ``nb201_dims``)."""

    def __init__(self, edge: EdgeFactory, input_shape: tuple[int, ...], num_classes: int,
                 channels: int, cells_per_stage: int) -> None:
        super().__init__()
        dims, c_in = nb201_dims(input_shape), input_shape[0]
        self.stem = nn.Sequential(CONV[dims](c_in, channels, 3, padding=1, bias=False),
                                  NORM[dims](channels))
        blocks: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage:
                blocks.append(ResidualReduction(c, 2 * c, dims))
                c *= 2
            blocks += [NB201Cell(edge, c) for _ in range(cells_per_stage)]
        self.cells = nn.Sequential(*blocks)
        self.head = nn.Sequential(NORM[dims](c), nn.ReLU(inplace=False),
                                  GLOBAL_POOL[dims](1), nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.cells(self.stem(x)))


def nb201_string(cell: dict[str, str]) -> str:
    """``{edge_j_i: op}`` -> the benchmark's ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
    nodes = ("|".join(f"{cell[nb201_field(j, i)]}~{i}" for i in range(j))
             for j in range(1, NB201_NODES))
    return "+".join(f"|{node}|" for node in nodes)


def parse_nb201(text: str) -> dict[str, str]:
    """The benchmark's architecture string -> ``{edge_j_i: op}``; SpaceError if malformed."""
    def fail(why: str) -> SpaceError:
        return SpaceError(f"NAS-Bench-201 string {text!r}: {why}")

    nodes, ops = text.split("+"), nb201_ops()
    if len(nodes) != NB201_NODES - 1:
        raise fail(f"expected {NB201_NODES - 1} nodes separated by '+', got {len(nodes)}")
    cell = {}
    for j, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")):
            raise fail(f"node {j} must be written |op~i|...|")
        edges = node[1:-1].split("|")
        if len(edges) != j:
            raise fail(f"node {j} needs {j} edges, got {len(edges)}")
        for i, edge in enumerate(edges):
            op, _, source = edge.partition("~")
            if source != str(i):
                raise fail(f"node {j}: edge {edge!r} must come from node {i}")
            if op not in ops:
                raise fail(f"unknown op {show(op)}{did_you_mean(op, ops)}")
            cell[nb201_field(j, i)] = op
    return cell


# --- DARTS ---------------------------------------------------------------------------------
#: DARTS's own genotype type (``genotypes.py`` of the reference code).
Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")
DARTS_STEPS = 4  # intermediate nodes per cell
DARTS_NODES = tuple(range(2, 2 + DARTS_STEPS))  # states 0, 1 are the cell's inputs
DARTS_CONCAT = list(DARTS_NODES)
CELL_TYPES = ("normal", "reduce")


def darts_pairs(node: int) -> list[str]:
    """The input pairs node ``node`` may read, as the space writes them: ``"0,1"``, ``"0,2"``...

    A pair of distinct states in increasing order: a genotype cannot read one state twice, and
    the order of a node's two edges does not change the network (their outputs are summed).
    """
    return [f"{a},{b}" for a, b in itertools.combinations(range(node), 2)]


@dataclass(frozen=True)
class CellPlan:
    """What a DARTS cell type is made of: the states each intermediate node reads and the
    factory of the module on each of those edges."""

    inputs: Sequence[Sequence[int]]  # per intermediate node (states 2, 3, ...)
    edge: EdgeFactory


class DartsCell(nn.Module):
    """Preprocess the two inputs to C channels (FactorizedReduce after a reduction cell, else
    ReLU-Conv-BN 1x1); state k = sum of its edges over the states it reads; output = concat of
    the intermediate states. Edges from the cell's inputs have stride 2 in a reduction cell."""

    def __init__(self, plan: CellPlan, c_prev_prev: int, c_prev: int, channels: int,
                 reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.preprocess0 = (FactorizedReduce(c_prev_prev, channels) if reduction_prev
                            else relu_conv_bn(c_prev_prev, channels, 1))
        self.preprocess1 = relu_conv_bn(c_prev, channels, 1)
        self.inputs = [tuple(states) for states in plan.inputs]
        self.edges = nn.ModuleDict({
            f"{node}_{state}": plan.edge(node, state, channels, 2 if reduction and state < 2 else 1)
            for node, states in enumerate(self.inputs, start=2) for state in states})
        self.out_channels = channels * len(self.inputs)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node, inputs in enumerate(self.inputs, start=2):
            states.append(sum(self.edges[f"{node}_{s}"](states[s]) for s in inputs))
        return torch.cat(states[2:], dim=1)


class DartsNet(nn.Module):
    """DARTS's evaluation network (NetworkCIFAR without the auxiliary head): a 3x3 conv stem to
    ``stem_multiplier * C`` channels, ``layers`` cells with reduction cells (doubling C) at 1/3
    and 2/3 of the depth, global pool, linear."""

    def __init__(self, normal: CellPlan, reduce: CellPlan, input_shape: tuple[int, ...],
                 num_classes: int, channels: int, layers: int, stem_multiplier: int = 3) -> None:
        super().__init__()
        c_in = _image_channels(input_shape, "darts")
        c_curr = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(c_in, c_curr, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c_curr))
        c_prev_prev, c_prev, c_curr = c_curr, c_curr, channels
        cells, reduction_prev = [], False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
            cell = DartsCell(reduce if reduction else normal, c_prev_prev, c_prev, c_curr,
                             reduction, reduction_prev)
            cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.out_channels
        self.cells = nn.ModuleList(cells)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(c_prev, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.head(s1)


def darts_genotype(arch: dict[str, Any]) -> Genotype:
    """An architecture of a ``darts`` space -> DARTS's ``Genotype`` (two (op, input) per node)."""
    def pairs(cell: dict[str, Any]) -> list[tuple[str, int]]:
        out = []
        for node in DARTS_NODES:
            spec = cell[f"node{node}"]
            a, b = (int(s) for s in spec["inputs"].split(","))
            out += [(spec["op_a"], a), (spec["op_b"], b)]
        return out

    return Genotype(normal=pairs(arch["normal"]), normal_concat=DARTS_CONCAT,
                    reduce=pairs(arch["reduce"]), reduce_concat=DARTS_CONCAT)


def darts_cells(genotype: Genotype | str) -> dict[str, dict[str, Any]]:
    """A DARTS ``Genotype`` (or its printed form) -> the ``normal``/``reduce`` architecture
    fields; a node's two edges are put in input order. SpaceError if it is not a 4-node cell."""
    if isinstance(genotype, str):
        genotype = parse_genotype(genotype)
    out = {}
    for kind in CELL_TYPES:
        edges, concat = getattr(genotype, kind), list(getattr(genotype, f"{kind}_concat"))
        where = f"genotype {kind}"
        if concat != DARTS_CONCAT:
            raise SpaceError(f"{where}_concat: must be {DARTS_CONCAT}, got {concat}")
        if len(edges) != 2 * DARTS_STEPS:
            raise SpaceError(f"{where}: expected {2 * DARTS_STEPS} (op, input) pairs, got "
                             f"{len(edges)}")
        cell = {}
        for k, node in enumerate(DARTS_NODES):
            (op_a, a), (op_b, b) = sorted(edges[2 * k : 2 * k + 2], key=lambda e: e[1])
            for op in (op_a, op_b):
                if op not in DARTS_OPS:
                    raise SpaceError(f"{where}: unknown op {show(op)}{did_you_mean(op, DARTS_OPS)}")
            if a == b or not 0 <= a < b < node:
                raise SpaceError(f"{where}: node {node} must read two distinct earlier states, "
                                 f"got {a} and {b}")
            cell[f"node{node}"] = {"inputs": f"{a},{b}", "op_a": op_a, "op_b": op_b}
        out[kind] = cell
    return out


def parse_genotype(text: str) -> Genotype:
    """``Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], ...)`` as DARTS
    prints it (``range(2, 6)`` for the concat too), read without ``eval``."""
    def fail() -> SpaceError:
        return SpaceError(f"not a DARTS genotype: {text[:80]!r} (expected Genotype(normal=[...], "
                          "normal_concat=[...], reduce=[...], reduce_concat=[...]))")

    try:
        call = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise fail() from None
    if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Genotype"
            and not call.args and {k.arg for k in call.keywords} == set(Genotype._fields)):
        raise fail()
    values = {}
    for keyword in call.keywords:
        node = keyword.value
        try:
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "range"
                    and not node.keywords):
                values[keyword.arg] = list(range(*(ast.literal_eval(a) for a in node.args)))
            else:
                values[keyword.arg] = [tuple(e) if isinstance(e, list | tuple) else e
                                       for e in ast.literal_eval(node)]
        except (ValueError, TypeError, SyntaxError):
            raise fail() from None
    return Genotype(**values)


def darts_plan(cell: dict[str, Any]) -> CellPlan:
    """The discrete cell of an architecture: each edge gets its one op."""
    inputs = [tuple(int(s) for s in cell[f"node{n}"]["inputs"].split(",")) for n in DARTS_NODES]

    def edge(node: int, state: int, channels: int, stride: int) -> nn.Module:
        spec = cell[f"node{node}"]
        op = spec["op_a"] if state == inputs[node - 2][0] else spec["op_b"]
        return DARTS_OPS[op](channels, channels, stride)

    return CellPlan(inputs, edge)


# --- load-time checks ----------------------------------------------------------------------
def _finite(space: Space, origin: str, field: str) -> list[Any]:
    options = space.values(field)
    if options is None:
        raise SpaceError(f"{origin}: space.{field}: must be a constant or a choice")
    return options


def _check_fields(space: Space, origin: str, path: str, required: Sequence[str],
                  optional: Sequence[str] = ()) -> None:
    """The group at ``path`` has exactly the ``required`` fields (plus any ``optional``)."""
    where = f"space.{path}" if path else "space"
    if path and space.domain(path) is not None and not space.fields(path):
        raise SpaceError(f"{origin}: {where}: must be a mapping with fields "
                         f"{', '.join(required)}")
    present = space.fields(path) if path else [name for name, _ in space.root.fields]
    for name in present:
        if name not in (*required, *optional):
            raise SpaceError(f"{origin}: {where}.{name}: unknown field"
                             f"{did_you_mean(name, [*required, *optional])}; known: "
                             f"{', '.join([*required, *optional])}")
    for name in required:
        if name not in present:
            raise SpaceError(f"{origin}: {where}.{name}: missing")


def _check_positive(space: Space, origin: str, field: str) -> None:
    if space.domain(field) is None:
        return
    for v in _finite(space, origin, field):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise SpaceError(f"{origin}: space.{field}: must be positive integers, got {show(v)}")


def _check_ops(space: Space, origin: str, field: str, ops: dict[str, OpFactory]) -> None:
    for op in _finite(space, origin, field):
        if op not in ops:
            raise SpaceError(f"{origin}: space.{field}: unknown op {show(op)}"
                             f"{did_you_mean(op, ops)}; known ops: {', '.join(ops)}")


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def _check_registry_op(space: Space, origin: str, field: str, op: Op) -> None:
    """What the macro grammar checks of a registry op on a layer, for a cell's edge: the
    package it needs, inputs a cell takes (sequences or images), and channels its heads divide
    (every stage's are C times a power of two, so C's decide)."""
    op.check()
    if not op.dims & {1, 2}:
        raise SpaceError(f"{origin}: space.{field}: op {op.name!r} takes no sequences or images, "
                         "the inputs of a NAS-Bench-201 cell")
    for c in _finite(space, origin, "channels"):
        if c % op.multiple:
            raise SpaceError(f"{origin}: space.channels: {c} is not a multiple of "
                             f"{op.multiple}, which op {op.name!r} ({field}) needs")


class NB201Builder:
    """``model: nb201``: fields ``channels`` (C), ``cells_per_stage`` (N), ``cell`` (one op per
    edge ``edge_J_I``, into node J from node I) and optionally ``train``."""

    FIELDS = ("channels", "cells_per_stage", "cell")
    #: the fields a genotype string records (the tabular benchmark is keyed by them)
    genotype_fields = ("cell",)

    @staticmethod
    def check(space: Space, origin: str) -> None:
        _check_fields(space, origin, "", NB201Builder.FIELDS, ("train",))
        _check_fields(space, origin, "cell", [nb201_field(j, i) for j, i in NB201_EDGES])
        for field in ("channels", "cells_per_stage"):
            _check_positive(space, origin, field)
        ops = nb201_ops()
        for j, i in NB201_EDGES:
            field = f"cell.{nb201_field(j, i)}"
            _check_ops(space, origin, field, ops)
            for name in _finite(space, origin, field):
                if name not in NB201_OPS:
                    _check_registry_op(space, origin, field, OPS[name])

    @staticmethod
    def build(arch: dict[str, Any], input_shape: tuple[int, ...], num_classes: int,
              width: float = 1.0) -> nn.Module:
        """``width``: a multiplier of C (a proxy task's narrower network)."""
        cell, dims, ops = arch["cell"], nb201_dims(input_shape), nb201_ops()

        def edge(j: int, i: int, channels: int, stride: int) -> nn.Module:
            return ops[cell[nb201_field(j, i)]](channels, channels, stride, dims)

        return NB201Net(edge, input_shape, num_classes, _scaled(arch["channels"], width),
                        arch["cells_per_stage"])

    @staticmethod
    def describe(arch: dict[str, Any]) -> str:
        return nb201_string(arch["cell"])

    @staticmethod
    def parse(text: str) -> dict[str, Any]:
        return {"cell": parse_nb201(text)}


class DartsBuilder:
    """``model: darts``: fields ``channels`` (C), ``layers`` (cells), optional
    ``stem_multiplier`` (3), ``normal`` and ``reduce`` cells (``node2``..``node5``, each
    ``{inputs: "a,b", op_a, op_b}``: op_a on state a, op_b on state b) and optionally ``train``."""

    FIELDS = ("channels", "layers", *CELL_TYPES)
    genotype_fields = CELL_TYPES

    @staticmethod
    def check(space: Space, origin: str) -> None:
        _check_fields(space, origin, "", DartsBuilder.FIELDS, ("stem_multiplier", "train"))
        for field in ("channels", "layers", "stem_multiplier"):
            _check_positive(space, origin, field)
        for kind in CELL_TYPES:
            _check_fields(space, origin, kind, [f"node{n}" for n in DARTS_NODES])
            for node in DARTS_NODES:
                path = f"{kind}.node{node}"
                _check_fields(space, origin, path, ("inputs", "op_a", "op_b"))
                allowed = darts_pairs(node)
                for pair in _finite(space, origin, f"{path}.inputs"):
                    if pair not in allowed:
                        raise SpaceError(f"{origin}: space.{path}.inputs: {show(pair)} is not a "
                                         f"pair of distinct earlier states; allowed: "
                                         f"{', '.join(allowed)}")
                for op in ("op_a", "op_b"):
                    _check_ops(space, origin, f"{path}.{op}", DARTS_OPS)

    @staticmethod
    def build(arch: dict[str, Any], input_shape: tuple[int, ...], num_classes: int,
              width: float = 1.0) -> nn.Module:
        """``width``: a multiplier of C (a proxy task's narrower network)."""
        return DartsNet(darts_plan(arch["normal"]), darts_plan(arch["reduce"]), input_shape,
                        num_classes, _scaled(arch["channels"], width), arch["layers"],
                        arch.get("stem_multiplier", 3))

    @staticmethod
    def describe(arch: dict[str, Any]) -> str:
        return str(darts_genotype(arch))

    @staticmethod
    def parse(text: str) -> dict[str, Any]:
        return darts_cells(text)



# --- supernets (``ModelBuilder.mixed_edges``) ----------------------------------------------
class NB201Edges(MixedEdges):
    """A NAS-Bench-201 supernet: one alpha row per cell edge (into J from I, ``NB201_EDGES``
    order), shared by all cells, as the paper's DARTS baseline does."""

    searched = r"cell\."

    def __init__(self, space: Space) -> None:
        super().__init__(space)
        self.edges = {"cell": list(NB201_EDGES)}
        self.ops = {"cell": self.candidates([f"cell.{nb201_field(j, i)}" for j, i in NB201_EDGES],
                                            nb201_ops())}

    def network(self, input_shape: tuple[int, ...], num_classes: int, mix: Mix) -> nn.Module:
        dims, ops = nb201_dims(input_shape), nb201_ops()

        def edge(j: int, i: int, channels: int, stride: int) -> nn.Module:
            return mix("cell", (j, i), lambda op: ops[op](channels, channels, stride, dims))

        return NB201Net(edge, input_shape, num_classes, self.template["channels"],
                        self.template["cells_per_stage"])

    def path(self, arch: Arch) -> Path:
        ops = self.ops["cell"]
        return {"cell": [ops.index(arch["cell"][nb201_field(j, i)]) for j, i in NB201_EDGES]}

    def derive(self, weights: dict[str, torch.Tensor]) -> Arch:
        return {**self.template, "cell": derive_nb201(weights["cell"], self.ops["cell"])}

    def skip_count(self, arch: Arch) -> int:
        return sum(op == SKIP for op in arch["cell"].values())


class DartsEdges(MixedEdges):
    """A DARTS supernet: every node of a cell reads every earlier state through a mixed op, one
    alpha matrix per cell type (rows node-major: node 2's inputs 0, 1; node 3's 0, 1, 2; ...)
    shared by all cells of the type, as in DARTS."""

    searched = "|".join(rf"{kind}\." for kind in CELL_TYPES)

    def __init__(self, space: Space) -> None:
        super().__init__(space)
        self.edges = {kind: [(n, s) for n in DARTS_NODES for s in range(n)]
                      for kind in CELL_TYPES}
        self.ops = {kind: self.candidates([f"{kind}.node{n}.{side}" for n in DARTS_NODES
                                           for side in ("op_a", "op_b")], DARTS_OPS)
                    for kind in CELL_TYPES}

    def network(self, input_shape: tuple[int, ...], num_classes: int, mix: Mix) -> nn.Module:
        def plan(kind: str) -> CellPlan:
            def edge(node: int, source: int, channels: int, stride: int) -> nn.Module:
                return mix(kind, (node, source),
                           lambda op: DARTS_OPS[op](channels, channels, stride))

            return CellPlan([range(n) for n in DARTS_NODES], edge)

        t = self.template
        return DartsNet(plan("normal"), plan("reduce"), input_shape, num_classes,
                        t["channels"], t["layers"], t.get("stem_multiplier", 3))

    def path(self, arch: Arch) -> Path:
        """The edges a node does not read carry ``none``."""
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

    def derive(self, weights: dict[str, torch.Tensor]) -> Arch:
        return {**self.template, **{kind: derive_darts(weights[kind], self.ops[kind])
                                    for kind in CELL_TYPES}}

    def skip_count(self, arch: Arch) -> int:
        """In the normal cell (the reduction cell's skips downsample)."""
        return sum(spec[side] == SKIP for spec in arch["normal"].values()
                   for side in ("op_a", "op_b"))


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
