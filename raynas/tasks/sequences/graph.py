"""The ``transformer`` model as the report draws it: the stem, then one edge per encoder layer
named by its heads and MLP ratio, then the pooling and the classifier."""

from __future__ import annotations

from typing import Any

from raynas.report.graph import Graph


def transformer_graph(arch: dict[str, Any]) -> list[Graph]:
    from raynas.tasks.sequences.model import DEFAULTS

    a = {**DEFAULTS, **arch}
    layers = a["layers"]
    g = Graph(f"{a.get('space', 'transformer')}: {len(layers)} encoder layers, "
              f"{a['embed_dim']} dims")
    stem = a["stem"] if a["stem"] != "patch" else f"patch {a['patch_size']}"
    previous = g.node("x0", f"tokens\n{a['embed_dim']} dims")
    g.edge(g.node("input", "input", "input"), previous,
           f"{stem} stem, {a['positional']} positions")
    for i, layer in enumerate(layers, start=1):
        op = f"encoder_{layer['heads']}h_r{layer['mlp_ratio']}"
        g.edge(previous, g.node(f"x{i}", f"x{i}"), op, op)
        previous = f"x{i}"
    g.edge(previous, g.node("output", "output", "output"), f"{a['pooling']} pooling, linear")
    return [g]


def text_cnn_graph(arch: dict[str, Any]) -> list[Graph]:
    """Kim's text CNN: token embeddings, one convolution per width side by side, their
    max-pooled features joined, and the classifier."""
    g = Graph(f"{arch.get('space', 'text_cnn')}: widths {arch['width_min']}-"
              f"{arch['width_max']}, {arch['filters']} filters each")
    g.edge(g.node("input", "input", "input"), g.node("e", f"embedding\n{arch['embed_dim']} dims"),
           "tokens")
    joined = g.node("pooled", "max over tokens")
    for width in range(arch["width_min"], arch["width_max"] + 1):
        op = f"conv_{width}"
        g.edge("e", joined, op, op)
    g.edge(joined, g.node("output", "output", "output"), f"dropout {arch['dropout']}, linear")
    return [g]
