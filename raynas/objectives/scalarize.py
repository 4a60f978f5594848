"""Several objectives as one number, so that every strategy and scheduler can optimise them.

Each objective is first normalised to ``n`` in about [0, 1], 0 at its best end and 1 at its
worst, with a range fixed before the search starts (the trials are compared by the scheduler
while they run, so the scale must not drift as results arrive):

- ``val_accuracy``: [1/classes (chance), 1]; ``val_auc``: [0.5 (chance), 1]; ``val_dice``:
  [0, 1];
- ``val_loss``, ``train_loss``: [0, ln(classes)] (the loss of a uniform guess);
- ``lr``, ``data_fraction``, proxy-task scales, a detection's mAP (``val_map``...): [0, 1];
- cost metrics (``params``, ``flops``, ``latency_ms``, ``peak_memory_mb``) span orders of
  magnitude, so they are normalised on a log10 scale, between the smallest and largest value
  of a random sample of the space's architectures, measured on the trials' device
  (``calibrate``); architectures outside the sample's range land a little outside [0, 1].

``weighted``: ``s = sum(w_i n_i)``. ``chebyshev``: ``s = max(w_i n_i) + 0.001 sum(w_i n_i)``
(augmented Tchebycheff: it reaches non-convex parts of the Pareto front that a weighted sum
cannot, and the small sum breaks ties between weakly dominated points). Weights are scaled to
sum to 1. Lower is better; the trials report ``s`` as the metric ``scalarized``.

Optuna and Tune scalarise nothing themselves (pymoo does, but for its own algorithms, with
bounds taken from the population at hand), so this is written here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raynas.errors import ConfigError
from raynas.objectives.metrics import METRICS

if TYPE_CHECKING:
    from raynas.config import SearchConfig
    from raynas.objectives.pareto import Objective

SCALAR = "scalarized"
KINDS = ("weighted", "chebyshev")
CALIBRATION_SAMPLES = 12


@dataclass(frozen=True)
class Scalarizer:
    kind: str
    objectives: tuple[tuple[str, str], ...]
    weights: tuple[float, ...]
    ranges: tuple[tuple[float, float], ...]  # (low, high) per objective; log10 if log_scale

    def normalised(self, result: Mapping[str, Any]) -> list[float]:
        out = []
        for (metric, mode), (low, high) in zip(self.objectives, self.ranges, strict=True):
            value = float(result[metric])
            if log_scale(metric):
                value = math.log10(max(value, 1e-12))
            share = (value - low) / (high - low)
            out.append(share if mode == "min" else 1 - share)
        return out

    def __call__(self, result: Mapping[str, Any]) -> float:
        """The scalar of a result; NaN when an objective is missing or not finite."""
        if not all(isinstance(result.get(m), int | float) and math.isfinite(result[m])
                   for m, _ in self.objectives):
            return math.nan
        terms = [w * n for w, n in zip(self.weights, self.normalised(result), strict=True)]
        if self.kind == "weighted":
            return sum(terms)
        return max(terms) + 1e-3 * sum(terms)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Scalarizer:
        """Back from ``dataclasses.asdict`` through JSON (lists become tuples again)."""
        return cls(data["kind"], tuple(tuple(o) for o in data["objectives"]),
                   tuple(data["weights"]), tuple(tuple(r) for r in data["ranges"]))

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "metric": SCALAR, "mode": "min",
                "objectives": [f"{m}:{mode}" for m, mode in self.objectives],
                "weights": list(self.weights),
                "ranges": {m: {"low": lo, "high": hi, "log10": log_scale(m)}
                           for (m, _), (lo, hi) in zip(self.objectives, self.ranges,
                                                       strict=True)}}


def scalarization_of(config: SearchConfig, num_objectives: int, native: bool) -> str | None:
    """``--scalarize``, else ``weighted`` where the strategy (with its scheduler) cannot take
    several objectives itself (``native``); None for a single objective or a native
    multi-objective run."""
    if config.scalarize is not None:
        if config.scalarize not in KINDS:
            raise ConfigError(f"--scalarize: {config.scalarize!r} is not one of "
                              f"{', '.join(KINDS)}")
        if num_objectives < 2:
            raise ConfigError("--scalarize: needs two or more --objective")
        return config.scalarize
    if num_objectives > 1 and not native:
        return "weighted"
    if config.weights is not None:
        raise ConfigError("--weights: weigh objectives for --scalarize (with two or more "
                          "--objective)")
    return None


def parse_weights(text: str | None, count: int) -> tuple[float, ...]:
    """``--weights 0.7,0.3`` -> weights summing to 1 (default: equal)."""
    if text is None:
        return (1 / count,) * count
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise ConfigError(f"--weights: {text!r} is not comma-separated numbers") from None
    if len(weights) != count:
        raise ConfigError(f"--weights: {len(weights)} weights for {count} objectives")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"--weights: {text!r}: weights must be >= 0, not all 0")
    return tuple(w / sum(weights) for w in weights)


def fixed_range(metric: str, num_classes: int) -> tuple[float, float] | None:
    """The range of a metric known without measuring anything, or None (a cost metric)."""
    found = METRICS.get(metric)
    return found.range(num_classes) if found else None


def log_scale(metric: str) -> bool:
    """Costs that span orders of magnitude are normalised on a log10 scale."""
    found = METRICS.get(metric)
    return bool(found and found.scale == "log")


def needs_sample(objectives: Sequence[Objective], num_classes: int) -> list[str]:
    """The objectives whose range comes from a sample of architectures."""
    return [m for m, _ in objectives if fixed_range(m, num_classes) is None]


def make_scalarizer(kind: str, objectives: Sequence[Objective], weights: Sequence[float],
                    num_classes: int, sample: Sequence[Mapping[str, float]]) -> Scalarizer:
    """``sample``: cost metrics of sampled architectures (``calibrate``), for the log ranges."""
    ranges = []
    for metric, _ in objectives:
        found = fixed_range(metric, num_classes)
        if found is None:
            logs = [math.log10(max(float(s[metric]), 1e-12)) for s in sample if metric in s]
            if not logs:
                raise ConfigError(f"--objective {metric}: no sampled architecture reported it, "
                                  "so it cannot be normalised for --scalarize")
            low, high = min(logs), max(logs)
            found = (low, high if high > low else low + 1)
        ranges.append(found)
    return Scalarizer(kind, tuple(objectives), tuple(weights), tuple(ranges))


