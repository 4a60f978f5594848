"""The settings of a search. Kept free of heavy imports, so the CLI parses its flags (and
rejects bad ones) without loading torch or Ray."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SearchConfig:
    """Every setting of a search; the CLI flags map one to one onto these fields."""

    space: str = "macro_cnn"
    dataset: str = "digits"
    strategy: str = "tpe"
    scheduler: str = "asha"
    num_trials: int | None = None
    max_epochs: int = 6
    fidelity: str = "epochs"  # epochs | data | data:MIN_FRACTION (see estimation.fidelity)
    concurrency: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    seed: int = 0
    experiment: str | None = None
    tracking_uri: str | None = None
    address: str | None = None
    storage: str | None = None
    retrain_epochs: int = 10
    objective: list[str] | None = None  # METRIC:max|min, repeated; the first one is primary
    max_retries: int = 2  # restarts of a trial whose worker died, from its last checkpoint
    max_failed_trials: int | None = None  # end the search once this many trials failed
    resume: str | None = None  # a search folder: finish that search instead of a new one
    tracking_wait: float = 120.0  # seconds the end of a search waits for an unreachable MLflow
