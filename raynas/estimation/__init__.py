"""Performance estimation: how a candidate architecture is scored - full or partial training
(``train``, with ``fidelity`` and proxy tasks), a tabular benchmark's lookup (``tabular``),
zero-cost proxies (``zero_cost``), weight sharing (``oneshot``, ``darts``), learning curves
(``learning_curve``) and the costs a trial measures (``costs``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

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
    from raynas.estimation.train import check_train_space
    from raynas.models import check_space

    if isinstance(source, Space):
        return source
    space, origin = read_space(source)
    check_space(space, origin)
    check_train_space(space, origin)
    return space


def trial_function(data: Any) -> Callable[..., None]:
    """The Tune function trainable that scores a trial on ``data`` (called with ``space=``,
    ``data=`` and ``settings=``): training on a ``Dataset``, or a lookup in a tabular
    benchmark's ``Table``."""
    from raynas.estimation.tabular import Table, tabular_trial
    from raynas.estimation.train import train_trial

    return tabular_trial if isinstance(data, Table) else train_trial
