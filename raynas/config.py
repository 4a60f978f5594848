"""The settings of a search, as plain data: the bottom layer, imported by every other. Kept
free of heavy imports, so the CLI parses its flags (and rejects bad ones) without loading torch
or Ray. ``raynas.experiment.resolve`` turns them into checked, parsed values once."""

from __future__ import annotations

from dataclasses import dataclass

TIME_ATTR = "budget"  # the result key every scheduler measures progress in
#: With ``--time-budget``: the share kept for the final retraining when the trials start; the
#: retraining then runs as many of ``--retrain-epochs`` as the time left allows.
RETRAIN_SHARE = 0.2


@dataclass
class SearchConfig:
    """Every setting of a search; the CLI flags map one to one onto these fields."""

    space: str = "macro_cnn"
    dataset: str = "digits"
    strategy: str = "tpe"
    scheduler: str = "asha"
    proxy: str = "synflow"  # --strategy zero_cost: the zero-cost proxy that ranks candidates
    zc_candidates: int = 1000  # --strategy zero_cost: architectures sampled and scored
    zc_top_k: int = 8  # --strategy zero_cost: the best-scored ones, trained through Tune
    supernet: str = "spos"  # --strategy oneshot: spos | enas, how the supernet samples paths
    oneshot_searcher: str = "evolution"  # --strategy oneshot: the search against the supernet
    num_trials: int | None = None
    max_epochs: int = 6
    fidelity: str = "epochs"  # epochs | data|width|resolution[:MIN] (see estimation.fidelity)
    proxy_task: str | None = None  # e.g. width=0.5,resolution=0.5: what every trial trains on
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
    constraint: list[str] | None = None  # METRIC<=BOUND (<, >=, >), repeated; see objectives
    latency_batch: int = 1  # the batch size latency_ms is measured at
    latency_device: str | None = None  # cpu | cuda; default: the device the trial trains on
    scalarize: str | None = None  # weighted | chebyshev: several objectives as one (scalarize)
    weights: str | None = None  # e.g. 0.7,0.3: one per objective (default: equal)
    max_retries: int = 2  # restarts of a trial whose worker died, from its last checkpoint
    max_failed_trials: int | None = None  # end the search once this many trials failed
    resume: str | None = None  # a search folder: finish that search instead of a new one
    tracking_wait: float = 120.0  # seconds the end of a search waits for an unreachable MLflow
    time_budget: str | None = None  # e.g. 20m: the whole search, trials and final retraining
