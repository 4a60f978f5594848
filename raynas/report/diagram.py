"""Draw architecture graphs (``graph``) as PNGs of a fixed size, with matplotlib alone.

Graphviz lays out graphs better but needs a ``dot`` binary that a pip install does not bring;
these graphs are small DAGs, so a layered layout is enough: a node's column is its longest
distance from a source, nodes sharing a column are stacked, an edge that skips columns (or
shares its two ends with another) is drawn as an arc so that it stays visible. Drawing uses the
object-oriented ``Figure`` API (no pyplot state), so it is safe on Tune's driver.
"""

from __future__ import annotations

import io
from collections import defaultdict

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from raynas.report.graph import ABSENT, Graph

SIZE = (1400, 440)  # pixels of every architecture diagram; several panels sit side by side
DPI = 100
PAD = 12  # pixels between a panel's edge and its outermost nodes
TITLE = 28  # pixels above the panels for the title, and above each panel for its own
COLOURS = {"input": "#d9d9d9", "tensor": "#cfe2f3", "merge": "#fff2cc", "output": "#d9ead3"}
EM = 0.6  # a character's width in font sizes (DejaVu Sans, on average)


def draw(panels: list[Graph], title: str = "") -> bytes:
    """The panels side by side in one PNG of ``SIZE`` pixels."""
    width, height = SIZE
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    # Data coordinates are pixels, so arcs computed here look as they are drawn.
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.text(width / 2, height - TITLE / 2, title, ha="center", va="center", fontsize=11,
            weight="bold")
    share = width / len(panels)
    for k, graph in enumerate(panels):
        _panel(ax, graph, k * share, share, height - TITLE)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _points(pixels: float) -> float:
    return pixels * 72 / DPI


def _to_border(centre: tuple[float, float], towards: tuple[float, float], box_w: float,
               box_h: float) -> float:
    """How far a ray from a box's centre towards a point runs inside the box."""
    dx, dy = abs(towards[0] - centre[0]), abs(towards[1] - centre[1])
    scale = min(box_w / 2 / dx if dx else float("inf"), box_h / 2 / dy if dy else float("inf"))
    return scale * (dx * dx + dy * dy) ** 0.5


def _panel(ax, graph: Graph, left: float, width: float, top: float) -> None:
    column = graph.longest(lambda e: 1)  # a node's column: its longest path from a source
    columns = max(column.values()) + 1
    stacks: dict[int, list[str]] = defaultdict(list)
    for node in graph.nodes:
        stacks[column[node.id]].append(node.id)
    height = top - TITLE
    row = min(80.0, (height - 40) / max(len(s) for s in stacks.values()))
    # Boxes take at most half of a column, so that a label fits between two of them.
    box_w = min(100.0, 0.5 * (width - 2 * PAD) / columns)
    step = (width - 2 * PAD - box_w) / max(1, columns - 1)
    box_h = min(36.0, 0.7 * row)
    where = {}
    for c, ids in stacks.items():
        for i, node_id in enumerate(ids):
            x = left + PAD + box_w / 2 + c * step if columns > 1 else left + width / 2
            where[node_id] = (x, height / 2 + ((len(ids) - 1) / 2 - i) * row)
    longest = max(len(line) for n in graph.nodes for line in n.label.splitlines())
    node_font = max(5.0, min(9.0, _points(box_w - 6) / (EM * longest)))
    edge_font = max(5.0, min(8.0, _points(step) / (EM * 12)))
    ax.text(left + PAD, top - TITLE / 2, graph.title, ha="left", va="center", fontsize=9,
            color="0.25")

    for node in graph.nodes:
        x, y = where[node.id]
        ax.add_patch(FancyBboxPatch((x - box_w / 2, y - box_h / 2), box_w, box_h,
                                    boxstyle="round,pad=0,rounding_size=5",
                                    fc=COLOURS[node.kind], ec="0.35", lw=0.8, zorder=3))
        ax.text(x, y, node.label, ha="center", va="center", fontsize=node_font, zorder=4,
                linespacing=1.1)

    pairs: dict[frozenset, list] = defaultdict(list)
    for e in graph.edges:
        pairs[frozenset((e.src, e.dst))].append(e)
    arcs = crowded = 0
    for e in graph.edges:
        (x1, y1), (x2, y2) = where[e.src], where[e.dst]
        twins = pairs[frozenset((e.src, e.dst))]
        if len(twins) > 1:  # e.g. an op and a skip between the same two maps: fan them out
            rank = next(k for k, twin in enumerate(twins) if twin is e)  # equal ones too
            rad = 0.5 * (rank - (len(twins) - 1) / 2)
        elif column[e.dst] - column[e.src] > 1 and y1 == y2:
            # alternate below / above the row; the arc's peak (rad * dx / 2) stays in the panel
            rad = min(0.3, (height - 48) / abs(x2 - x1)) * (1 if arcs % 2 else -1)
            arcs += 1
        else:
            rad = 0.0
        absent = e.op in ABSENT
        colour = "0.6" if absent else "0.1" if e.op else "0.45"
        # The curve leaves a node towards its control point: stop it at the box's border
        # (clipping to the box patch itself is 10 times slower).
        control = ((x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1))
        ax.add_patch(FancyArrowPatch(
            (x1, y1), (x2, y2), shrinkA=_points(_to_border((x1, y1), control, box_w, box_h)),
            shrinkB=_points(_to_border((x2, y2), control, box_w, box_h) + 1),
            connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>", mutation_scale=9,
            color=colour, lw=1.0 if e.op else 0.7, linestyle="--" if absent else "-",
            zorder=2))
        if not e.label:
            continue
        # The midpoint of matplotlib's arc3 curve: a quadratic Bezier whose control point is
        # the chord's middle moved by rad * (dy, -dx).
        x = (x1 + x2) / 2 + rad * (y2 - y1) / 2
        y = (y1 + y2) / 2 - rad * (x2 - x1) / 2
        clear = box_h / 2 + 4 + edge_font
        too_wide = EM * edge_font * len(e.label) * DPI / 72 > step - box_w
        if y1 == y2 and too_wide and abs(y - y1) < clear:
            # Wider than the gap between two boxes: above or below them (straight edges in
            # turn, arcs on their side).
            side = (y > y1) - (y < y1)
            if not side:
                side, crowded = (1 if crowded % 2 == 0 else -1), crowded + 1
            y = y1 + side * clear
        ax.text(x, y, e.label, ha="center", va="center", fontsize=edge_font, color=colour,
                zorder=5, bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                                "alpha": 0.85})
