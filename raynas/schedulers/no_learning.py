"""A rule every search applies, whatever its scheduler: stop a trial that has learned nothing.

ASHA stops a trial only against peers recorded at its rung; with few peers (the first trials
of a search, a slow machine, a large dataset) a network stuck at chance trains on for every
epoch it is given. So once a trial has taken ``MIN_STEPS`` optimiser steps, each report is
checked against what a network that learned nothing scores (``Problem.chance``): at chance
accuracy (within two standard errors) *and* a training loss that has not fallen below
``FALLEN`` of the loss of predicting the label frequencies, it stops, and MLflow says why
(``raynas.stopped_by=no-learning``). A network learning slowly but surely has a falling loss
or an accuracy above chance, and goes on. It is a Tune ``Stopper``, the one place every
scheduler's trials pass through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray.tune.stopper import Stopper

from raynas.estimation.problem import Chance

#: Optimiser steps before the rule looks: a small dataset's first epochs are a few steps.
MIN_STEPS = 100
#: A loss at or above this share of chance's has not fallen.
FALLEN = 0.98
REASON = "no-learning"


def not_learning(result: dict[str, Any], chance: Chance) -> bool:
    """Whether a report shows a network that has learned nothing (after ``MIN_STEPS``)."""
    accuracy, loss = result.get("val_accuracy"), result.get("train_loss")
    if accuracy is None or loss is None or result.get("steps", 0) < MIN_STEPS:
        return False
    return accuracy <= chance.accuracy + chance.margin and loss >= FALLEN * chance.loss


class NotLearning(Stopper):
    """Stops the trials ``not_learning`` catches; ``on_stop(trial_id, why)`` records it."""

    def __init__(self, chance: Chance, on_stop: Callable[[str, str], None]) -> None:
        self.chance, self.on_stop = chance, on_stop

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if not not_learning(result, self.chance):
            return False
        self.on_stop(trial_id, f"val_accuracy {result['val_accuracy']:.4f} at chance "
                               f"({self.chance.accuracy:.4f}) and train_loss "
                               f"{result['train_loss']:.4f} not below {FALLEN:g} x "
                               f"{self.chance.loss:.4f} after {result['steps']} steps")
        return True

    def stop_all(self) -> bool:
        return False
