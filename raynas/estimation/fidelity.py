"""The budget a trial is measured in, and the proxy task it trains on.

Schedulers see one number, the ``budget`` a trial has used so far (their ``time_attr``), so ASHA,
Hyperband, BOHB, the median rule and the learning-curve rule act on any fidelity unchanged: epochs
(the default), or rungs of a cheaper *proxy task* - a fraction of the training data, of the
channels, or of the input resolution. Kept free of torch and Ray imports: the CLI parses
``--fidelity`` and ``--proxy-task`` before anything heavy loads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from raynas.config import TIME_ATTR
from raynas.errors import ConfigError

ETA = 3  # rungs grow by this factor, the reduction factor of our ASHA/Hyperband
DEFAULT_MIN_FRACTION = 1 / 9
#: The proxy task's knobs a rung can scale, and how ``describe`` names their rungs.
RESOURCES = {"data": "data fractions", "width": "width multipliers",
             "resolution": "resolution scales"}


@dataclass(frozen=True)
class ProxyTask:
    """A cheaper stand-in for the real task, each knob a fraction of the real one: the training
    data (nested class-balanced subsets), the channels of every layer (a width multiplier, as
    NASNet searched on narrow models), the input resolution (inputs downsampled)."""

    data: float = 1.0
    width: float = 1.0
    resolution: float = 1.0

    @property
    def full(self) -> bool:
        return self == REAL_TASK

    def scaled(self, knob: str, factor: float) -> ProxyTask:
        return replace(self, **{knob: getattr(self, knob) * factor})

    def shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The input shape (C, L) or (C, H, W) at this resolution (at least one pixel)."""
        channels, *size = input_shape
        return (channels, *(max(1, round(s * self.resolution)) for s in size))

    def metrics(self) -> dict[str, float]:
        return {"data_fraction": self.data, "width_multiplier": self.width,
                "resolution_scale": self.resolution}

    def describe(self) -> str:
        return ", ".join(f"{k} {v:g}" for k, v in vars(self).items() if v != 1)


REAL_TASK = ProxyTask()  # every knob at the real task's value


def parse_proxy_task(text: str | None) -> ProxyTask:
    """``--proxy-task width=0.5,resolution=0.5`` (knobs: data, width, resolution; each in
    (0, 1])."""
    task = REAL_TASK
    for item in (text or "").split(","):
        if not item.strip():
            continue
        knob, _, value = item.partition("=")
        try:
            fraction = float(value)
        except ValueError:
            fraction = -1.0
        if knob.strip() not in RESOURCES or not 0 < fraction <= 1:
            raise ConfigError(f"--proxy-task: expected KNOB=FRACTION[,...] with knobs "
                              f"{', '.join(RESOURCES)} and 0 < FRACTION <= 1, got {text!r}")
        task = replace(task, **{knob.strip(): fraction})
    return task


@dataclass(frozen=True)
class Fidelity:
    """``rungs == 0``: a trial reports after every epoch, budget = epochs trained.

    ``rungs == K``: Hyperband's resource as a proxy-task knob (Li et al. 2018 use data subsets;
    ``resource`` may also be the width or the resolution). Rung k trains a fresh model for
    ``max_epochs`` with that knob at ETA^(k-K+1) of ``task``'s and reports with budget ETA^k.
    The last rung is ``task`` itself, so a trial that survives all rungs reports exactly what
    FIFO would. ``task`` is the fixed proxy task every model trains on (``--proxy-task``).
    """

    max_epochs: int
    rungs: int = 0
    resource: str = "data"
    task: ProxyTask = REAL_TASK

    @property
    def max_budget(self) -> int:
        return ETA ** (self.rungs - 1) if self.rungs else self.max_epochs

    def fraction(self, rung: int) -> float:
        return float(ETA) ** (rung - self.rungs + 1)

    def budget(self, rung: int) -> int:
        return ETA**rung

    def task_at(self, rung: int) -> ProxyTask:
        """The proxy task rung ``rung`` trains on (``task`` for the epoch fidelity)."""
        return self.task.scaled(self.resource, self.fraction(rung)) if self.rungs else self.task

    def varies(self) -> set[str]:
        """The proxy task's knobs this fidelity moves off the real task's values."""
        moved = {k for k in RESOURCES if getattr(self.task, k) < 1}
        return moved | {self.resource} if self.rungs else moved

    def describe(self) -> str:
        if not self.rungs:
            text = f"<= {self.max_epochs} epochs each"
        else:
            shown = [f"1/{ETA ** (self.rungs - 1 - k)}" for k in range(self.rungs - 1)]
            text = (f"{self.max_epochs} epochs on {RESOURCES[self.resource]} "
                    f"{', '.join([*shown, '1'])}")
        return text if self.task.full else f"{text}, proxy task {self.task.describe()}"

    def progress(self, result: dict) -> str:
        """Where a reported result stands, for the progress lines."""
        if not self.rungs:
            return f"epoch {result.get('epoch')}/{self.max_epochs}"
        return f"{self.resource} {result.get(TIME_ATTR)}/{self.max_budget}"


def parse_fidelity(text: str, max_epochs: int, proxy_task: str | None = None) -> Fidelity:
    """``epochs``, or a proxy-task knob ``data``, ``width``, ``resolution`` with rungs 1/9, 1/3,
    1 (``KNOB:MIN``: down to MIN), all on top of ``--proxy-task``."""
    task = parse_proxy_task(proxy_task)
    kind, _, low = text.partition(":")
    if kind == "epochs" and not low:
        return Fidelity(max_epochs, task=task)
    if kind in RESOURCES:
        try:
            minimum = float(low) if low else DEFAULT_MIN_FRACTION
        except ValueError:
            minimum = -1.0
        if 0 < minimum <= 1:
            return Fidelity(max_epochs, 1 + math.floor(math.log(1 / minimum, ETA) + 1e-9), kind,
                            task)
    raise ConfigError(f"--fidelity: expected epochs, data, width or resolution, optionally "
                      f"KNOB:MIN_FRACTION (0 < MIN <= 1), got {text!r}")


def nested_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A permutation of the training set whose every prefix is (nearly) class-balanced, so the
    nested subsets of the data rungs all see every class in proportion."""
    rng = np.random.default_rng(seed)
    keys = np.empty(len(labels))
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        keys[rng.permutation(members)] = (np.arange(len(members)) + rng.random()) / len(members)
    return np.argsort(keys, kind="stable")
