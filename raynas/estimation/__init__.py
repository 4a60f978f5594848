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


def load_data(spec: str, seed: int = 0) -> Any:
    """A dataset to train on: ``DetectionData`` for ``coco:DIR`` (``raynas.detections``), else a
    ``Dataset`` of arrays (``raynas.data``); both split by the seed."""
    from raynas.data import load_dataset
    from raynas.detections import load_detection

    if spec.startswith("coco:"):
        return load_detection(spec, seed=seed)
    return load_dataset(spec, seed=seed)


def trial_function(data: Any) -> Callable[..., None]:
    """The Tune function trainable that scores a trial on ``data`` (called with ``space=``,
    ``data=`` and ``settings=``): training on a ``Dataset`` or on ``DetectionData``, or a
    lookup in a tabular benchmark's ``Table``."""
    from raynas.detections import DetectionData
    from raynas.estimation.detection import detection_trial
    from raynas.estimation.tabular import Table, tabular_trial
    from raynas.estimation.train import train_trial

    if isinstance(data, DetectionData):
        return detection_trial
    return tabular_trial if isinstance(data, Table) else train_trial


def final_training(data: Any) -> Callable[..., Any]:
    """What trains a search's best architecture on train+val and scores it on the test split
    (called with space, arch, data, epochs, settings; returns a ``train.Retrained``)."""
    from raynas.detections import DetectionData
    from raynas.estimation.detection import retrain_detector
    from raynas.estimation.train import retrain

    return retrain_detector if isinstance(data, DetectionData) else retrain
