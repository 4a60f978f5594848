"""The budget a trial is measured in: epochs (the default) or a fraction of the training data.

Schedulers see one number, the ``budget`` a trial has used so far (their ``time_attr``), so ASHA,
Hyperband, BOHB and the median rule act on either fidelity unchanged. Kept free of torch and Ray
imports: the CLI parses ``--fidelity`` before anything heavy loads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from raynas.errors import ConfigError

TIME_ATTR = "budget"  # the result key every scheduler measures progress in
ETA = 3  # data rungs grow by this factor, the reduction factor of our ASHA/Hyperband
DEFAULT_MIN_FRACTION = 1 / 9


@dataclass(frozen=True)
class Fidelity:
    """``data_rungs == 0``: a trial reports after every epoch, budget = epochs trained.

    ``data_rungs == K``: Hyperband's data-subset resource (Li et al. 2018). Rung k trains a fresh
    model for ``max_epochs`` on the fraction ETA^(k-K+1) of the training set (nested, class-
    balanced subsets, the same for every trial) and reports with budget ETA^k. The last rung is
    a full training, so a trial that survives all rungs reports exactly what FIFO would.
    """

    max_epochs: int
    data_rungs: int = 0

    @property
    def max_budget(self) -> int:
        return ETA ** (self.data_rungs - 1) if self.data_rungs else self.max_epochs

    def fraction(self, rung: int) -> float:
        return float(ETA) ** (rung - self.data_rungs + 1)

    def budget(self, rung: int) -> int:
        return ETA**rung

    def describe(self) -> str:
        if not self.data_rungs:
            return f"<= {self.max_epochs} epochs each"
        shown = [f"1/{ETA ** (self.data_rungs - 1 - k)}" for k in range(self.data_rungs - 1)]
        return f"{self.max_epochs} epochs on data fractions {', '.join([*shown, '1'])}"

    def progress(self, result: dict) -> str:
        """Where a reported result stands, for the progress lines."""
        if not self.data_rungs:
            return f"epoch {result.get('epoch')}/{self.max_epochs}"
        return f"data {result.get(TIME_ATTR)}/{self.max_budget}"


def parse_fidelity(text: str, max_epochs: int) -> Fidelity:
    """``epochs``, ``data`` (fractions 1/9, 1/3, 1) or ``data:MIN`` (fractions down to MIN)."""
    kind, _, low = text.partition(":")
    if kind == "epochs" and not low:
        return Fidelity(max_epochs)
    if kind == "data":
        try:
            minimum = float(low) if low else DEFAULT_MIN_FRACTION
        except ValueError:
            minimum = -1.0
        if 0 < minimum <= 1:
            return Fidelity(max_epochs, 1 + math.floor(math.log(1 / minimum, ETA) + 1e-9))
    raise ConfigError(f"--fidelity: expected epochs, data or data:MIN_FRACTION (0 < MIN <= 1), "
                      f"got {text!r}")


def nested_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A permutation of the training set whose every prefix is (nearly) class-balanced, so the
    nested subsets of the data rungs all see every class in proportion."""
    rng = np.random.default_rng(seed)
    keys = np.empty(len(labels))
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        keys[rng.permutation(members)] = (np.arange(len(members)) + rng.random()) / len(members)
    return np.argsort(keys, kind="stable")
