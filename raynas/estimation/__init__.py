"""Performance estimation: how a candidate architecture is scored - full or partial training
(``train``, with ``fidelity`` and proxy tasks), an application's own trials (``task``),
zero-cost proxies (``proxies``), weight sharing (``oneshot``, ``darts``), learning curves
(``learning_curve``) and the costs a trial measures (``costs``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from raynas.estimation.task import TASKS, Task
from raynas.models import check_space
from raynas.space import Space, read_space


class Estimator(Protocol):
    """How a plan's trials are scored when not by training each architecture on its own: the
    weight-sharing estimators (``oneshot.OneShot``, ``darts.Darts``) give the search its
    trainable, the Tune callback that records their trials, and the best architecture."""

    tracker: type

    def trainable(self, space: Space, data: Any, settings: Any, record: Any, tune_path: str,
                  progress: Callable[[str], None]) -> Any: ...

    def arch(self, space: Space, result: Any) -> dict[str, Any]: ...


def load_space(source: str | Path | dict[str, Any] | Space) -> Space:
    """Load and validate a space from a built-in name, a YAML path or a dict.

    Validation happens here, completely: the model's builder checks that every op and option the
    space can produce is one it can build, and the trainer that it knows every training
    hyperparameter, so an invalid space never reaches Ray.
    """
    from raynas.estimation.train import check_train_space  # torch: not for a light import

    if isinstance(source, Space):
        return source
    space, origin = read_space(source)
    check_space(space, origin)
    check_train_space(space, origin)
    return space


def task_of(data: Any) -> Task:
    """The task that trains on ``data`` (its ``Data.task``)."""
    return TASKS.find(data.task)


def trial_function(data: Any) -> Callable[..., None]:
    """The Tune function trainable that scores a trial on ``data`` (called with ``space=``,
    ``data=`` and ``settings=``): its task's ``trial``."""
    return task_of(data).load("trial")


def final_training(data: Any) -> Callable[..., Any] | None:
    """What trains a search's best architecture on train+val and scores it on the test split
    (called with space, arch, data, epochs, settings; returns a ``train.Retrained``), or None
    where the task looks results up instead."""
    return task_of(data).load("final")
