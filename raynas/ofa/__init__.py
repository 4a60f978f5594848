"""Once-for-All (docs/once-for-all.md): an elastic supernet trained once by progressive
shrinking, then a sub-network specialised per latency target without retraining."""

from __future__ import annotations

from raynas.models import ModelBuilder, register_builder

register_builder(ModelBuilder(
    "ofa", "raynas.models.elastic", example=("ofa_mbv3", (3, 8, 8)), latency_units=True,
    graph="raynas.report.graph:ofa_graph"))
