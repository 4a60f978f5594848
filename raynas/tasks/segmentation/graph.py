"""The 3-D U-Net as the report draws it (``ModelBuilder.graph``): feature maps down the encoder
and up the decoder, the searched op on every level's edges."""

from __future__ import annotations

from typing import Any

from raynas.report.graph import Graph


def unet3d_graph(arch: dict[str, Any]) -> list[Graph]:
    """Level i's op down the encoder (/2 from the second level), then up the decoder:
    upsample, concatenate the level's skip (through an attention gate if ``attention``), the
    level's op again; the head (and the fused side outputs)."""
    levels = arch["levels"]
    g = Graph(f"{arch.get('space', 'unet3d')}: {len(levels)} levels, attention "
              f"{'on' if arch['attention'] else 'off'}, fusion {arch['fusion']}")
    previous = g.node("input", "input", "input")
    for i, level in enumerate(levels):
        g.node(f"e{i}", f"e{i}\n{level['channels']} ch")
        g.edge(previous, f"e{i}", level["op"] if i == 0 else f"{level['op']} /2", level["op"])
        previous = f"e{i}"
    for i in reversed(range(len(levels) - 1)):
        level = levels[i]
        up = g.node(f"up{i}", f"up{i}\n{level['channels']} ch")
        g.edge(previous, up, "upsample x2")
        cat = g.node(f"cat{i}", "concat", "merge")
        g.edge(up, cat)
        g.edge(f"e{i}", cat, "attention gate" if arch["attention"] else "skip")
        g.node(f"d{i}", f"d{i}\n{level['channels']} ch")
        g.edge(cat, f"d{i}", level["op"], level["op"])
        previous = f"d{i}"
    head = "1x1x1 conv" + (" + fused scales" if arch["fusion"] == "multi_scale" else "")
    g.edge(previous, g.node("output", "output", "output"), head)
    return [g]
