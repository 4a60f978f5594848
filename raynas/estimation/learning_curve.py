"""Learning-curve extrapolation (Domhan et al. 2015): predict where a trial's curve ends from
its first points, and a Tune scheduler that stops a trial unlikely to beat the best one.

Written here because no maintained library does it: Domhan et al.'s own predictor is an
unmaintained Python 2 package, and neither Tune nor Optuna has an extrapolating pruner. Their
method fits an ensemble of parametric families by MCMC; this keeps the ensemble and replaces the
MCMC by least squares (``scipy.optimize.curve_fit``) and a Gaussian forecast - the families'
weighted mean, with their disagreement plus the fits' residual noise as its spread - which is
cheap enough to run on every result a trial reports.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.stats import norm


@dataclass(frozen=True)
class Family:
    """A parametric curve ``f(x, *params)`` with a starting guess and bounds for the fit."""

    f: Callable[..., np.ndarray]
    guess: Callable[[np.ndarray, np.ndarray], list[float]]
    bounds: tuple[list[float], list[float]]

    @property
    def num_params(self) -> int:
        return len(self.bounds[0])


def _pow3(x, c, a, alpha):
    return c - a * np.power(x, -alpha)


def _exp3(x, c, a, b):
    return c - a * np.exp(-b * x)


def _log2(x, a, b):
    return a + b * np.log(x)


INF = np.inf
#: Three of Domhan et al.'s families: two saturate (pow3, exp3), one keeps rising (log2), so the
#: ensemble does not assume a plateau the data do not show.
FAMILIES: dict[str, Family] = {
    "pow3": Family(_pow3, lambda x, y: [y[-1], y[-1] - y[0], 0.5],
                   ([-INF, -INF, 1e-3], [INF, INF, 10.0])),
    "exp3": Family(_exp3, lambda x, y: [y[-1], (y[-1] - y[0]) * math.e, 0.5],
                   ([-INF, -INF, 1e-3], [INF, INF, 10.0])),
    "log2": Family(_log2, lambda x, y: [y[0], y[-1] - y[0]], ([-INF, -INF], [INF, INF])),
}


@dataclass(frozen=True)
class Forecast:
    """The predicted value at the target budget: a Gaussian ``mean`` ± ``std``."""

    mean: float
    std: float
    families: dict[str, float]  # each fitted family's own prediction

    def probability_above(self, value: float) -> float:
        return float(norm.sf(value, loc=self.mean, scale=self.std))


def extrapolate(budgets: Sequence[float], values: Sequence[float], target: float,
                min_std: float = 0.01) -> Forecast | None:
    """Fit every family with fewer parameters than points to ``values`` over ``budgets`` (>= 1)
    and forecast the value at ``target``; None if no family fits. Families are weighted by
    the inverse of their residual variance; ``min_std`` is the noise floor of the metric."""
    x, y = np.asarray(budgets, float), np.asarray(values, float)
    predictions, variances = {}, {}
    for name, family in FAMILIES.items():
        if len(x) <= family.num_params:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                params, _ = curve_fit(family.f, x, y, p0=family.guess(x, y),
                                      bounds=family.bounds, maxfev=2000)
        except (RuntimeError, ValueError):  # no convergence
            continue
        prediction = float(family.f(target, *params))
        residual = float(np.sum((family.f(x, *params) - y) ** 2)) / (len(x) - family.num_params)
        if math.isfinite(prediction) and math.isfinite(residual):
            predictions[name], variances[name] = prediction, residual
    if not predictions:
        return None
    weights = {k: 1 / (v + min_std**2) for k, v in variances.items()}
    total = sum(weights.values())
    mean = sum(weights[k] * predictions[k] for k in predictions) / total
    spread = sum(weights[k] * (predictions[k] - mean) ** 2 for k in predictions) / total
    noise = sum(weights[k] * variances[k] for k in predictions) / total
    return Forecast(mean, math.sqrt(spread + noise + min_std**2), predictions)


