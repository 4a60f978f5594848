"""Once-for-All (docs/once-for-all.md): an elastic supernet trained once by progressive
shrinking, then a sub-network specialised per latency target without retraining.

``supernets``: the registry of elastic supernets (one per model); ``elastic``: the ``ofa``
model and its elastic supernet; ``shrinking``: progressive shrinking as a
Tune trial; ``specialize``: ``raynas ofa train`` and ``raynas specialize`` (MLflow runs, the
accuracy predictor, the constrained evolution); ``graph``: its picture; ``bench``: ``raynas bench
ofa``. The CLI commands stay in ``raynas.cli.ofa``."""

from __future__ import annotations

from raynas.bench.registry import Benchmark, register
from raynas.models import ModelBuilder, register_builder
from raynas.ofa.supernets import ElasticModel, register_elastic

register_builder(ModelBuilder(
    "ofa", "raynas.ofa.elastic", example=("ofa_mbv3", (3, 8, 8)), latency_units=True,
    graph="raynas.ofa.graph:ofa_graph"))
register_elastic(ElasticModel("ofa", "raynas.ofa.elastic:ElasticSupernet", frozenset({3}),
                              "images (C, H, W)"))
register(Benchmark.of_suite("ofa", "Once-for-All: train once + specialise 3 latency targets vs 3 "
                            "constrained searches; Kendall tau of inherited vs from-scratch "
                            "accuracy, predictor RMSE", "raynas.ofa.bench:main"))
