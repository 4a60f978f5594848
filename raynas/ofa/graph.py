"""The picture of a Once-for-All architecture (``ModelBuilder.graph`` of ``ofa``), in the
report's graph convention; kept apart from ``elastic`` so drawing one needs no torch."""

from __future__ import annotations

from typing import Any

from raynas.report.graph import Graph


def ofa_graph(arch: dict[str, Any]) -> list[Graph]:
    """A Once-for-All chain (``raynas.ofa.elastic``): the input resized, the stem, each
    stage's inverted-residual blocks (op ``mbconv_k<kernel>_e<expand>``), the head."""
    g = Graph(f"{arch.get('space', 'ofa')}: resolution x{arch['resolution']}, depths "
              + "-".join(str(len(s["blocks"])) for s in arch["stages"].values()))
    previous = g.node("x0", f"x0\n{arch['stem_channels']} ch")
    g.edge(g.node("input", "input", "input"), previous, f"resize x{arch['resolution']}, stem")
    i = 0
    for name, stage in arch["stages"].items():
        for j, block in enumerate(stage["blocks"]):
            i += 1
            op = f"mbconv_k{block['kernel']}_e{block['expand']}"
            stride = stage["stride"] if j == 0 else 1
            g.node(f"x{i}", f"x{i} ({name})\n{stage['channels']} ch")
            g.edge(previous, f"x{i}", op if stride == 1 else f"{op} /{stride}", op)
            previous = f"x{i}"
    g.edge(previous, g.node("output", "output", "output"), "head")
    return [g]
