"""What a trial measures about its architecture before training, and the constraints on it.

Costs (params, FLOPs, latency, peak memory) do not change while a model trains, so a trial
measures them once, before its first epoch, on the architecture itself (full width, real input
size, even when it trains on a proxy task). Constraints that can be decided from the
architecture alone - params, FLOPs, the predicted epoch time of a budgeted search and, for
builders with a latency table, the predicted latency - are checked before anything else: a
violating candidate is rejected without being measured or trained. The others are checked
once measured (latency, memory: still before training) or reported (accuracy, loss: at every
step).

The check is in the trainable rather than in a Searcher wrapper because only the trial runs on
the device the latency is about (the driver may have no GPU, or another CPU); a rejected trial
costs a Tune trial slot (about 0.1 s with reused actors) and shows up in MLflow with its costs
and ``raynas.feasible=false``, so a user sees what the constraint removed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from raynas.errors import ConfigError
from raynas.models import build_model, latency_units
from raynas.objectives.constraints import (
    FEASIBLE,
    VIOLATIONS,
    Constraint,
    violations,
)
from raynas.objectives.latency import LatencyTable
from raynas.objectives.measure import (
    count_flops,
    count_params,
    measure_latency,
    peak_memory_mb,
    train_seconds_per_sample,
)
from raynas.objectives.scalarize import SCALAR, Scalarizer

PREDICTED_LATENCY = "latency_lut_ms"  # the latency table's prediction, when it was needed
EPOCH_S = "epoch_s"  # predicted seconds per training epoch, from timed steps (budget planning)


@dataclass(frozen=True)
class CostSettings:
    """``search_metrics``: what the searcher and scheduler read; a rejected trial reports them
    as NaN (Tune requires them in every result), and the strategy sees a failed trial."""

    constraints: tuple[Constraint, ...] = ()
    latency_batch: int = 1
    latency_device: str | None = None  # None: the device the trial trains on
    scalarizer: Scalarizer | None = None
    search_metrics: tuple[str, ...] = ()
    # Samples an epoch of a trial processes (training, plus validation at a third of a training
    # sample's cost): set, the trial measures ``epoch_s``, its predicted seconds per epoch.
    epoch_samples: float = 0.0


def measure(space: Any, arch: dict[str, Any], data: Any, costs: CostSettings,
            device: torch.device, train_batch: int, timed: bool = True) -> dict[str, Any]:
    """The architecture's costs; with ``FEASIBLE: False`` if they break a constraint (and then
    without latency and memory if a predictable constraint rules it out already).
    ``timed=False``: params and FLOPs only."""
    model = build_model(space, arch, data.input_shape, data.num_classes)
    out: dict[str, Any] = {"params": count_params(model),
                           "flops": count_flops(model, data.input_shape)}
    if costs.epoch_samples:
        per_sample = train_seconds_per_sample(model.to(device), data.input_shape, train_batch)
        if per_sample is not None:
            out[EPOCH_S] = per_sample * costs.epoch_samples
    target = torch.device(costs.latency_device) if costs.latency_device else device
    if any(c.metric == "latency_ms" for c in costs.constraints):
        units = latency_units(space, arch, data.input_shape, data.num_classes)
        if units is not None:
            out[PREDICTED_LATENCY] = LatencyTable(target, costs.latency_batch).predict(units)
    predicted = {**out, "latency_ms": out.get(PREDICTED_LATENCY)}
    if broken := violations(predicted, costs.constraints):
        return {**out, FEASIBLE: False, VIOLATIONS: ", ".join(broken)}
    if not timed:
        return out
    model.to(target)
    out["latency_ms"] = measure_latency(model, data.input_shape, costs.latency_batch)
    out["peak_memory_mb"] = peak_memory_mb(model, data.input_shape, train_batch)
    if broken := violations(out, costs.constraints):
        out.update({FEASIBLE: False, VIOLATIONS: ", ".join(broken)})
    return out


def judged(metrics: dict[str, Any], costs: CostSettings) -> dict[str, Any]:
    """What a report adds to ``metrics``: feasibility (with constraints) and the scalar (when
    scalarising)."""
    out: dict[str, Any] = {}
    if costs.constraints:
        broken = violations(metrics, costs.constraints)
        out = {FEASIBLE: not broken, VIOLATIONS: ", ".join(broken)}
    if costs.scalarizer is not None:
        out[SCALAR] = costs.scalarizer(metrics)
    return out


def rejected(measured: dict[str, Any], costs: CostSettings) -> dict[str, Any]:
    """The one report of a trial rejected before training."""
    return {**{m: math.nan for m in costs.search_metrics}, **measured}


def check_cost_settings(config: Any) -> None:
    """Check the latency flags against the trials' resources (``config.costs`` checked its
    own ranges)."""
    resources = config.resources
    if config.costs.latency_device == "cuda" and (resources.gpus_per_trial <= 0 or (
            not resources.address and not torch.cuda.is_available())):
        raise ConfigError("--latency-device cuda: " + (
            "no CUDA GPU on this machine" if resources.gpus_per_trial > 0 else
            "trials measure on their own device; give them a GPU with --gpus-per-trial"))


