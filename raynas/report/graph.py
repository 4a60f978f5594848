"""An architecture as a graph: feature maps are nodes, operations are labelled edges.

This is the convention of the cell-search papers (NAS-Bench-201, DARTS draw their cells this
way), and it fits chains too. One function per builder (``graph_of``: the
``ModelBuilder.graph`` each builder declares) turns an architecture into one or more panels
(a DARTS genotype has a normal and a reduction cell); drawing (``diagram``) and the structural
facts tagged on every trial (``facts``) work on any of them.
"""

from __future__ import annotations

import graphlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raynas.models import BUILDERS
from raynas.registry import load_ref

#: Ops that carry nothing (DARTS and NAS-Bench-201 call it ``none``, our op registry ``zero``):
#: drawn dashed and not counted in the depth.
ABSENT = frozenset({"none", "zero"})


@dataclass(frozen=True)
class Node:
    id: str
    label: str
    kind: str = "tensor"  # input | tensor | merge | output: only the colour depends on it


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    label: str = ""
    op: str | None = None  # the searched op on this edge; None for fixed wiring (stem, skip)


@dataclass
class Graph:
    """One panel of a diagram; ``nodes`` in any order, edges must form a DAG."""

    title: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def node(self, id: str, label: str, kind: str = "tensor") -> str:
        self.nodes.append(Node(id, label, kind))
        return id

    def edge(self, src: str, dst: str, label: str = "", op: str | None = None) -> None:
        self.edges.append(Edge(src, dst, label, op))

    def longest(self, weight: Callable[[Edge], int]) -> dict[str, int]:
        """Per node, the heaviest path from any source to it (nodes in a topological order from
        the stdlib's ``graphlib``, which raises on a cycle)."""
        sorter = graphlib.TopologicalSorter({n.id: set() for n in self.nodes})
        for e in self.edges:
            sorter.add(e.dst, e.src)
        best = {}
        for node in sorter.static_order():
            best[node] = max((best[e.src] + weight(e) for e in self.edges if e.dst == node),
                             default=0)
        return best


def facts(panels: list[Graph]) -> dict[str, Any]:
    """``depth``: the longest chain of searched ops (``none``/``zero`` excluded) through any
    panel; ``ops``: how often each op is used, e.g. ``conv_3x3:2,identity:1`` (most used
    first)."""
    depth = max(max(g.longest(lambda e: e.op is not None and e.op not in ABSENT).values())
                for g in panels)
    counts = Counter(e.op for g in panels for e in g.edges if e.op is not None)
    ops = ",".join(f"{op}:{n}" for op, n in sorted(counts.items(), key=lambda i: (-i[1], i[0])))
    return {"depth": depth, "ops": ops}


# --- one function per builder ----------------------------------------------------------------
def macro_graph(arch: dict[str, Any], head: str = "head") -> list[Graph]:
    """A chain (``raynas.models.macro``): stem -> x0, layer i -> x_i, ``head`` (by default
    pool and linear). ``skip`` adds a wiring edge, ``parallel`` a second op edge, ``dense`` a
    concat node fed by every earlier feature map."""
    layers = arch["layers"]
    g = Graph(f"{arch.get('space', 'macro')}: {len(layers)} layers")
    previous = g.node("x0", f"x0\n{arch.get('stem_channels', 16)} ch")
    g.edge(g.node("input", "input", "input"), previous, "stem")
    for i, layer in enumerate(layers, start=1):
        op, connection = layer["op"], layer["connection"]
        label = op if layer["stride"] == 1 else f"{op} /{layer['stride']}"
        current = f"x{i}"
        source = previous
        if connection == "dense":
            source = g.node(f"cat{i}", "concat", "merge")
            for j in range(i):
                g.edge(f"x{j}", source)
        g.node(current, f"x{i}\n{layer['channels']} ch")
        g.edge(source, current, label, op)
        if connection == "parallel":
            g.edge(previous, current, label, op)
        elif connection == "skip":
            g.edge(previous, current, "skip")
        previous = current
    g.edge(previous, g.node("output", "output", "output"), head)
    return [g]


def nb201_graph(arch: dict[str, Any]) -> list[Graph]:
    """The NAS-Bench-201 cell: node j sums edge (j, i) over i < j; node 3 is its output."""
    # models.cell imports torch; a report (``raynas report``, ``compare``) draws without it
    from raynas.models.cell import NB201_EDGES, NB201_NODES, nb201_field

    last = NB201_NODES - 1
    g = Graph(f"NAS-Bench-201 cell (C={arch['channels']}, {arch['cells_per_stage']} per stage)")
    for j in range(NB201_NODES):
        kind = "input" if j == 0 else "output" if j == last else "tensor"
        g.node(str(j), {0: "in", last: "out"}.get(j, str(j)), kind)
    for j, i in sorted(NB201_EDGES, key=lambda e: (e[1], e[0])):
        op = arch["cell"][nb201_field(j, i)]
        g.edge(str(i), str(j), op, op)
    return [g]


def darts_graph(arch: dict[str, Any]) -> list[Graph]:
    """The DARTS normal and reduction cells: inputs c_{k-2}, c_{k-1}; nodes 2-5 each sum two
    ops; the output concatenates nodes 2-5."""
    from raynas.models.cell import CELL_TYPES, DARTS_NODES  # torch: see nb201_graph

    panels = []
    for kind in CELL_TYPES:
        g = Graph(f"{kind} cell (C={arch['channels']}, {arch['layers']} cells)")
        g.node("0", "c_{k-2}", "input")
        g.node("1", "c_{k-1}", "input")
        for node in DARTS_NODES:
            spec = arch[kind][f"node{node}"]
            g.node(str(node), str(node))
            a, b = spec["inputs"].split(",")
            g.edge(a, str(node), spec["op_a"], spec["op_a"])
            g.edge(b, str(node), spec["op_b"], spec["op_b"])
        g.node("out", "c_k", "output")
        for node in DARTS_NODES:
            g.edge(str(node), "out")
        panels.append(g)
    return panels


def graph_of(model: str) -> Callable[[dict[str, Any]], list[Graph]] | None:
    """The graph function a model's builder declares (``ModelBuilder.graph``), or None."""
    builder = BUILDERS.get(model)
    return load_ref(builder.graph) if builder is not None and builder.graph else None
