"""The metrics a trial reports, in one registry: what ``--objective`` and ``--constraint`` can
name, what the tracker records in MLflow, and the range a scalarised search normalises each one
on. Tasks register the metrics they add (a segmentation's Dice, a detection's mAP)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from raynas.registry import Registry

#: How a metric is normalised (``raynas.objectives.scalarize``): ``chance`` [1/classes, 1];
#: ``loss`` [0, ln(classes)], the loss of a uniform guess; ``unit`` [low, 1]; ``log`` log10
#: between a random sample's extremes; ``None`` linear between them.
SCALES = ("chance", "loss", "unit", "log", None)


@dataclass(frozen=True)
class Metric:
    name: str  # or, with ``family``, the prefix of a family of metrics (a Dice per class)
    scale: str | None = None
    low: float = 0.0  # with ``unit``: its chance level (a ROC AUC's 0.5)
    family: bool = False

    def range(self, num_classes: int) -> tuple[float, float] | None:
        """The range known without measuring anything, or None (measured on a sample)."""
        if self.scale == "chance":
            return 1 / num_classes, 1.0
        if self.scale == "loss":
            return 0.0, math.log(num_classes)
        if self.scale == "unit":
            return self.low, 1.0
        return None


METRICS: Registry[Metric] = Registry("--objective", "metric")
register_metric = METRICS.register


def known() -> list[str]:
    """The metrics a search can name (families aside)."""
    return [m.name for m in METRICS.values() if not m.family]


def families() -> tuple[str, ...]:
    return tuple(m.name for m in METRICS.values() if m.family)


for _metric in (
    Metric("val_accuracy", "chance"), Metric("val_loss", "loss"), Metric("train_loss", "loss"),
    Metric("params", "log"), Metric("flops", "log"), Metric("lr", "unit"),
    Metric("data_fraction", "unit"), Metric("peak_memory_mb", "log"),
    Metric("latency_ms", "log"), Metric("epoch_s", "log"), Metric("width_multiplier", "unit"),
    Metric("resolution_scale", "unit"),
    Metric("val_auc", "unit", low=0.5),  # classification: ROC AUC, one-vs-rest
):
    register_metric(_metric)
