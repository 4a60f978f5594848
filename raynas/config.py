"""The settings of a search. Kept free of heavy imports, so the CLI parses its flags (and
rejects bad ones) without loading torch or Ray."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from raynas.errors import ConfigError

if TYPE_CHECKING:
    from raynas.data import Dataset
    from raynas.estimation.fidelity import Fidelity
    from raynas.estimation.tabular import Table
    from raynas.space import Space
    from raynas.strategies.pareto import Objective

#: What every trial reports (and MLflow records per step): what --objective can name.
METRICS = ("val_accuracy", "val_loss", "train_loss", "params", "flops", "lr", "data_fraction",
           "peak_memory_mb", "latency_ms", "width_multiplier", "resolution_scale",
           "sim_time_s")  # sim_time_s: a tabular trial's simulated training time so far


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


def validate(config: SearchConfig) -> tuple[Space, Dataset | Table]:
    """Check everything that can be checked before Ray starts or MLflow is written (the CLI
    calls this before it imports Ray or MLflow, so bad input fails in about a second)."""
    from raynas.data import load_dataset
    from raynas.space import load_space
    from raynas.strategies import check_names

    for name in ("max_epochs", "concurrency", "retrain_epochs", "num_trials",
                 "max_failed_trials"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: must be >= 1")
    if config.max_retries < 0 or config.tracking_wait < 0:
        raise ConfigError("--max-retries and --tracking-wait: must be >= 0")
    if config.cpus_per_trial <= 0:
        raise ConfigError("--cpus-per-trial: must be > 0")
    if config.gpus_per_trial < 0 or (config.gpus_per_trial > 1
                                     and not float(config.gpus_per_trial).is_integer()):
        raise ConfigError("--gpus-per-trial: a fraction in (0, 1] or a whole number of GPUs")
    from raynas.estimation.costs import check_settings as check_costs

    check_names(config.strategy, config.scheduler, check_costs(config, objectives_of(config)))
    if config.strategy == "zero_cost":
        from raynas.strategies.zero_cost import check_settings

        check_settings(config)
    if fidelity_of(config).rungs and config.scheduler == "pbt":
        raise ConfigError("--scheduler pbt: needs --fidelity epochs (it mutates hyperparameters "
                          "of trials that keep training)")
    if config.address and config.address != "auto":
        _probe(config.address)
    space = load_space(config.space)
    if config.strategy in ("oneshot", "darts"):
        from raynas.strategies.weight_sharing import check_settings as check_weight_sharing

        check_weight_sharing(config, space)
    fidelity = fidelity_of(config)
    if fidelity.task.width < 1 or (fidelity.rungs and fidelity.resource == "width"):
        from raynas.models import check_width

        check_width(space)
    if config.dataset.startswith("tabular:"):  # results looked up, not trained
        from raynas.estimation.tabular import load_for_search

        return space, load_for_search(config, space)
    return space, load_dataset(config.dataset, seed=config.seed)


def objectives_of(config: SearchConfig) -> list[Objective]:
    """``--objective`` as (metric, mode) pairs, else the strategy's default objectives."""
    from raynas.strategies import default_objectives
    from raynas.strategies.pareto import parse_objectives

    return parse_objectives(config.objective, default_objectives(config.strategy))


def fidelity_of(config: SearchConfig) -> Fidelity:
    from raynas.estimation.fidelity import parse_fidelity

    return parse_fidelity(config.fidelity, config.max_epochs, config.proxy_task)


def _probe(address: str) -> None:
    """Fail fast on an unreachable cluster: ``ray.init`` would retry for minutes."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address: expected HOST:PORT, ray://HOST:PORT or auto, got "
                          f"{address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(f"--address: cannot reach a Ray cluster at {address} "
                          f"({exc.strerror or type(exc).__name__})") from None
