"""Learning-curve extrapolation as a Tune scheduler (Domhan et al. 2015): stop a trial unlikely to
beat the best."""

from __future__ import annotations

from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from raynas.config import TIME_ATTR
from raynas.estimation.learning_curve import Forecast, extrapolate


class LearningCurveStopping(FIFOScheduler):
    """Stop a trial once its extrapolated final value beats the best value any other trial has
    reported with probability below ``1 - confidence`` (Domhan et al.'s rule, their delta =
    0.05). A trial is judged from ``grace_period`` (in ``time_attr`` units) on, and never
    stopped while no other trial has reported, or when no family fits its curve."""

    def __init__(self, time_attr: str = TIME_ATTR, max_t: float = 8, grace_period: float = 3,
                 confidence: float = 0.95, min_std: float = 0.01, metric: str | None = None,
                 mode: str | None = None) -> None:
        super().__init__()
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        self._time_attr, self._max_t, self._grace = time_attr, max_t, grace_period
        self._confidence, self._min_std = confidence, min_std
        self._metric, self._mode = metric, mode
        self._curves: dict[str, list[tuple[float, float]]] = {}  # trial id -> (time, value)
        self.stopped: dict[str, Forecast] = {}  # trial id -> the forecast that stopped it

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if (self._metric and metric) or (self._mode and mode):
            return False
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return True

    def _sign(self) -> float:
        """Values are compared as ``sign * value``, so larger is better in either mode."""
        return -1.0 if self._mode == "min" else 1.0

    def _record(self, trial: Trial, result: dict) -> list[tuple[float, float]]:
        curve = self._curves.setdefault(trial.trial_id, [])
        if self._metric in result and self._time_attr in result:
            point = (float(result[self._time_attr]), self._sign() * float(result[self._metric]))
            if not curve or point[0] > curve[-1][0]:
                curve.append(point)
        return curve

    def _best_other(self, trial_id: str) -> float | None:
        values = [v for tid, curve in self._curves.items() if tid != trial_id for _, v in curve]
        return max(values) if values else None

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        curve = self._record(trial, result)
        best = self._best_other(trial.trial_id)
        if not curve or curve[-1][0] < self._grace or curve[-1][0] >= self._max_t or (
                best is None):
            return TrialScheduler.CONTINUE
        times, values = zip(*curve, strict=True)
        forecast = extrapolate(times, values, self._max_t, self._min_std)
        if forecast is None or forecast.probability_above(best) >= 1 - self._confidence:
            return TrialScheduler.CONTINUE
        self.stopped[trial.trial_id] = forecast
        return TrialScheduler.STOP

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        if result:
            self._record(trial, result)

    def debug_string(self) -> str:
        return (f"Using learning-curve stopping (confidence {self._confidence:g}): "
                f"{len(self.stopped)} stopped.")
