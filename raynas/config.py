"""The settings of a search, as plain data: the bottom layer, imported by every other. Kept
free of heavy imports, so the CLI parses its flags (and rejects bad ones) without loading torch
or Ray. ``raynas.experiment.resolve`` turns them into checked, parsed values once.

The settings come in groups, in the spirit of Ray Tune's ``TuneConfig``/``RunConfig``/
``ScalingConfig``: ``SearchConfig`` itself says what to search and for how long; ``Resources``
where and how wide the trials run; ``Tracking`` where the records and the search's state go;
``Failures`` what a failing trial may cost; ``Costs`` how the cost metrics are measured. Every
setting's name is its ``raynas search`` flag's (``--cpus-per-trial`` is
``resources.cpus_per_trial``), unique across the groups, so ``SearchConfig.of`` maps the flat
flags onto the groups in one place. Each group checks its own ranges when it is made.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from raynas.errors import ConfigError

TIME_ATTR = "budget"  # the result key every scheduler measures progress in
#: With ``--time-budget``: the share kept for the final retraining when the trials start; the
#: retraining then runs as many of ``--retrain-epochs`` as the time left allows.
RETRAIN_SHARE = 0.2


def cache_dir() -> Path:
    """Where generated data and measured tables are kept between runs: ``$RAYNAS_CACHE``,
    default ``~/.cache/raynas``."""
    return Path(os.environ.get("RAYNAS_CACHE", Path.home() / ".cache" / "raynas"))


def _at_least(value: float | None, low: float, name: str) -> None:
    """``--NAME: must be >= LOW`` unless ``value`` is unset (None)."""
    if value is not None and value < low:
        raise ConfigError(f"--{name.replace('_', '-')}: must be >= {low:g}")


@dataclass(frozen=True)
class Resources:
    """Where and how wide the trials run (Tune's ``ScalingConfig``, ``ray.init``)."""

    concurrency: int = 2  # trials at a time
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # a fraction packs several trials on one GPU
    address: str | None = None  # an existing Ray cluster (ray://HOST:PORT or auto)

    def __post_init__(self) -> None:
        _at_least(self.concurrency, 1, "concurrency")
        if self.cpus_per_trial <= 0:
            raise ConfigError("--cpus-per-trial: must be > 0")
        if self.gpus_per_trial < 0 or (self.gpus_per_trial > 1
                                       and not float(self.gpus_per_trial).is_integer()):
            raise ConfigError("--gpus-per-trial: a fraction in (0, 1] or a whole number of GPUs")


@dataclass(frozen=True)
class Tracking:
    """Where a search's records and state live (Tune's ``RunConfig`` name and storage, and
    MLflow), and the search folder to finish instead of starting a new one."""

    experiment: str | None = None  # the MLflow experiment (default: the space's name)
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI or ./mlflow.db
    storage: str | None = None  # Tune's results: a folder or a URI (default: $RAYNAS_STORAGE)
    tracking_wait: float = 120.0  # seconds the end of a search waits for an unreachable MLflow
    resume: str | None = None  # a search folder, or auto (STORAGE/EXPERIMENT if it is there)

    def __post_init__(self) -> None:
        _at_least(self.tracking_wait, 0, "tracking_wait")


@dataclass(frozen=True)
class Failures:
    """What failing trials may cost (Tune's ``FailureConfig``, and a stop)."""

    max_retries: int = 2  # restarts of a trial whose worker died, from its last checkpoint
    max_failed_trials: int | None = None  # end the search once this many trials failed

    def __post_init__(self) -> None:
        _at_least(self.max_retries, 0, "max_retries")
        _at_least(self.max_failed_trials, 1, "max_failed_trials")


@dataclass(frozen=True)
class Costs:
    """How the cost metrics that objectives and constraints name are measured."""

    latency_batch: int = 1  # the batch size latency_ms is measured at
    latency_device: str | None = None  # cpu | cuda; default: the device the trial trains on

    def __post_init__(self) -> None:
        _at_least(self.latency_batch, 1, "latency_batch")
        if self.latency_device not in (None, "cpu", "cuda"):
            raise ConfigError(f"--latency-device: {self.latency_device!r} is not cpu or cuda")


#: The groups of ``SearchConfig``, by field name.
GROUPS: dict[str, type] = {"resources": Resources, "tracking": Tracking, "failures": Failures,
                           "costs": Costs}
#: Which group holds each grouped setting (names are unique across the groups).
_GROUP_OF = {f.name: group for group, kind in GROUPS.items() for f in fields(kind)}


@dataclass(frozen=True)
class SearchConfig:
    """Every setting of a search: what to search and for how long here, the rest in groups.

    ``SearchConfig(space="small_cnn", num_trials=8, resources=Resources(concurrency=4))``;
    from the flags' flat names: ``SearchConfig.of({"space": "small_cnn", "concurrency": 4})``.
    """

    space: str = "macro_cnn"
    dataset: str = "digits"
    strategy: str = "tpe"
    #: --strategy-option KEY=VALUE: the strategy's own options (``Strategy.options``), as
    #: strings the options' field types convert (a typed value is taken as it is)
    strategy_options: dict[str, Any] | None = None
    scheduler: str = "asha"
    num_trials: int | None = None
    max_epochs: int = 6
    fidelity: str = "epochs"  # epochs | data|width|resolution[:MIN] (see estimation.fidelity)
    proxy_task: str | None = None  # e.g. width=0.5,resolution=0.5: what every trial trains on
    objective: list[str] | None = None  # METRIC:max|min, repeated; the first one is primary
    constraint: list[str] | None = None  # METRIC<=BOUND (<, >=, >), repeated; see objectives
    scalarize: str | None = None  # weighted | chebyshev: several objectives as one (scalarize)
    weights: str | None = None  # e.g. 0.7,0.3: one per objective (default: equal)
    retrain_epochs: int = 10  # the final retraining of the best architecture on train+val
    seed: int = 0
    time_budget: str | None = None  # e.g. 20m: the whole search, trials and final retraining
    budget_plan: bool = True  # with time_budget: plan the trials from it (experiment.budget)
    #: Space fields fixed by its builder's flags (``--backbone-weights PATH``; ``SpaceFlag``)
    fixed: dict[str, Any] | None = None
    resources: Resources = field(default_factory=Resources)
    tracking: Tracking = field(default_factory=Tracking)
    failures: Failures = field(default_factory=Failures)
    costs: Costs = field(default_factory=Costs)

    def __post_init__(self) -> None:
        for name in ("max_epochs", "retrain_epochs", "num_trials"):
            _at_least(getattr(self, name), 1, name)

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> SearchConfig:
        """A config from a dict: nested, as ``asdict`` writes it (``raynas.json``), or flat,
        by the flags' names (``raynas search``'s arguments), or a mix."""
        top: dict[str, Any] = {}
        grouped: dict[str, dict[str, Any]] = {group: {} for group in GROUPS}
        for key, value in settings.items():
            if key in GROUPS:
                grouped[key].update(asdict(value) if isinstance(value, GROUPS[key]) else value)
            elif key in _GROUP_OF:
                grouped[_GROUP_OF[key]][key] = value
            else:
                top[key] = value
        return cls(**top, **{group: GROUPS[group](**values) for group, values in grouped.items()})

    def flat(self) -> dict[str, Any]:
        """Every setting by its flag's name (``SearchConfig.of`` reads it back)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out.update(asdict(value) if f.name in GROUPS else {f.name: value})
        return out

    def replace(self, **settings: Any) -> SearchConfig:
        """A copy with ``settings`` changed, by the flags' names, whichever group holds them:
        ``config.replace(resume=folder)``."""
        grouped = {group: replace(getattr(self, group), **{k: v for k, v in settings.items()
                                                           if _GROUP_OF.get(k) == group})
                   for group in GROUPS}
        return replace(self, **{k: v for k, v in settings.items() if k not in _GROUP_OF},
                       **grouped)
