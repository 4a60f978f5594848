"""Tabular-benchmark mode: trials look their results up in a table instead of training.

NAS-Bench-201 (Dong & Yang 2020) made NAS research reproducible by training every cell of its
space once and publishing the learning curves; a search then costs lookups, and strategies are
compared at equal *simulated* training time. ``--dataset tabular:PATH`` runs any raynas search
that way on a table the user supplies, or builds with ``raynas tabulate``
(``raynas.tabular.tabulate``: real trainings, one Ray task per architecture).

A table is long-format, one row per (architecture, seed, epoch), as CSV, JSON (a list of row
objects, or JSON lines for ``.jsonl``) or Parquet (with pyarrow); read with pandas:

==================  ========  ===============================================================
column              required  meaning
==================  ========  ===============================================================
``arch``            yes       the architecture: the model's notation (a NAS-Bench-201 string,
                              a DARTS genotype), else ``raynas.space.arch_hash`` of it
``epoch``           yes       1, 2, ... n: the row holds the results after that epoch
``val_accuracy``    yes       validation accuracy after the epoch, a fraction in [0, 1]
``test_accuracy``   yes       test accuracy after the epoch, a fraction in [0, 1]
``train_time_s``    yes       seconds that epoch of training took
``seed``            no        the training run (several seeds per architecture); default 0
``val_loss``,       no        reported to the schedulers and MLflow like a real trial's
``train_loss``,
``params``,
``flops``
==================  ========  ===============================================================

A trial reports the table's curve of one seed (picked from the search seed and the
architecture) epoch by epoch, with ``budget`` = epoch, so ASHA and the other schedulers stop
trials on the table's numbers, and ``sim_time_s``, the training time the trial would have
taken so far. Test accuracies are never reported to the search: the end of the search reads
the best architecture's from the table instead of retraining.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from raynas.errors import ConfigError, DataError, SpaceError
from raynas.estimation.fidelity import TIME_ATTR
from raynas.space import Space, arch_hash

if TYPE_CHECKING:
    import pandas as pd

    from raynas.config import SearchConfig
    from raynas.estimation.train import TrialSettings
import pandas as pd
from ray import tune

from raynas.models import check_genotype_space, describe, from_genotype

PREFIX = "tabular:"
REQUIRED = ("arch", "epoch", "val_accuracy", "test_accuracy", "train_time_s")
PER_EPOCH = ("val_loss", "train_loss")  # optional curves
STATIC = ("params", "flops")  # optional, one value per architecture
SIM_TIME = "sim_time_s"
READERS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet",
           ".pq": "parquet"}


@dataclass(frozen=True)
class Curve:
    """One training run of one architecture: per-epoch arrays (index 0 = epoch 1)."""

    seed: int
    values: dict[str, np.ndarray]
    static: dict[str, float]

    @property
    def epochs(self) -> int:
        return len(self.values["val_accuracy"])


@dataclass(frozen=True)
class Table:
    """A tabular benchmark: architecture key -> its training runs (one per seed)."""

    path: str
    runs: dict[str, list[Curve]]
    task = "tabular"  # trials look results up (the task ``raynas.tabular`` registers)

    @property
    def name(self) -> str:
        return self.path

    def check_settings(self, resolved: Any) -> None:
        """What this kind of table needs of a search besides ``check_search``'s rules."""

    @property
    def epochs(self) -> int:
        """The epochs every run has (a search may use up to this many)."""
        return min(c.epochs for curves in self.runs.values() for c in curves)

    @property
    def metrics(self) -> set[str]:
        first = next(iter(self.runs.values()))[0]
        return {*first.values, *first.static} - {"test_accuracy", "train_time_s"}

    def summary(self) -> str:
        count = sum(len(c) for c in self.runs.values())
        return (f"table {self.path}: {len(self.runs)} architectures, {count} runs, "
                f"{self.epochs} epochs")

    def run(self, key: str, seed: int) -> Curve:
        """The run a trial of ``key`` replays: one of its seeds, chosen by ``seed``."""
        if key not in self.runs:
            raise DataError(f"architecture {key} is not in the table {self.path}")
        curves = self.runs[key]
        return curves[random.Random(f"{seed}/{key}").randrange(len(curves))]

    def test_accuracy(self, key: str) -> float:
        """Final-epoch test accuracy, the mean over the table's seeds (what retraining the
        architecture would measure); NaN for a table without test accuracies (NAS-Bench-201 as
        ``raynas.tabular.nb201`` reads it)."""
        runs = [c.values["test_accuracy"][-1] for c in self.runs[key]
                if "test_accuracy" in c.values]
        return float(np.mean(runs)) if runs else math.nan


def table_key(space: Space, arch: dict[str, Any]) -> str:
    """How a table names ``arch``: its model's notation, else its hash."""
    return describe(space, arch) or arch_hash(arch)


def table_format(path: Path, flag: str) -> str:
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(f"{flag}: unknown table format {path.suffix!r}; give a "
                          f"{', '.join(READERS)} file")
    return kind


def _read(path: Path, flag: str) -> pd.DataFrame:
    kind = table_format(path, flag)
    if not path.is_file():
        raise ConfigError(f"{flag}: no such file")
    try:
        if kind == "csv":
            return pd.read_csv(path)
        if kind in ("json", "jsonl"):
            return pd.read_json(path, orient="records", lines=kind == "jsonl")
        return pd.read_parquet(path)
    except ImportError as exc:
        raise ConfigError(f"{flag}: reading Parquet needs pyarrow ({exc})") from None
    except Exception as exc:  # pandas raises parser-specific errors of many types
        message = " ".join(str(exc).split())[:200]
        raise ConfigError(f"{flag}: not a readable {kind} table ({message})") from None


def load_table(path: str | Path, flag: str | None = None) -> Table:
    """Read and check a table; any problem is one ConfigError naming ``flag`` and the column."""
    path = Path(path).expanduser()
    flag = flag or f"--dataset {PREFIX}{path}"
    frame = _read(path, flag)
    if frame.empty:
        raise ConfigError(f"{flag}: the table has no rows")
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ConfigError(f"{flag}: missing column {missing[0]!r} (columns: "
                          f"{', '.join(map(str, frame.columns))}; see raynas.tabular.table)")
    if "seed" not in frame.columns:
        frame = frame.assign(seed=0)
    frame = frame.assign(arch=frame["arch"].astype(str))
    numeric = [c for c in ("epoch", "seed", *REQUIRED[2:], *PER_EPOCH, *STATIC)
               if c in frame.columns]
    for column in numeric:
        values = frame[column]
        if values.dtype.kind not in "iuf" or values.isna().any() or not np.isfinite(
                values.to_numpy(dtype=float)).all():
            raise ConfigError(f"{flag}: column {column!r}: every value must be a finite number")
    for column in ("val_accuracy", "test_accuracy"):
        if not frame[column].between(0, 1).all():
            raise ConfigError(f"{flag}: column {column!r}: accuracies must be fractions in "
                              "[0, 1] (divide percentages by 100)")
    if (frame["train_time_s"] < 0).any():
        raise ConfigError(f"{flag}: column 'train_time_s': must be >= 0")
    frame = frame.sort_values(["arch", "seed", "epoch"], kind="stable")
    runs: dict[str, list[Curve]] = {}
    for (key, seed), rows in frame.groupby(["arch", "seed"], sort=False):
        epochs = rows["epoch"].to_numpy()
        if not np.array_equal(epochs, np.arange(1, len(rows) + 1)):
            raise ConfigError(f"{flag}: architecture {key} seed {seed}: epochs must be 1, 2, "
                              f"... without gaps or repeats, got {epochs.tolist()[:10]}")
        static = {}
        for column in STATIC:
            if column in rows:
                if rows[column].nunique() != 1:
                    raise ConfigError(f"{flag}: architecture {key}: column {column!r} must be "
                                      "the same in all its rows")
                static[column] = float(rows[column].iloc[0])
        values = {c: rows[c].to_numpy(dtype=float) for c in (*REQUIRED[2:], *PER_EPOCH)
                  if c in rows}
        runs.setdefault(key, []).append(Curve(int(seed), values, static))
    return Table(str(path), runs)


def load_source(spec: str, argument: str, seed: int) -> Table:
    """The ``tabular:PATH`` source (``raynas.data.Source``)."""
    return load_table(argument, f"--dataset {spec}")


def check_search(resolved: Any) -> None:
    """Whether a search's settings fit its table: no measured costs, the fidelity, epochs,
    objectives and space, and what the kind of table needs (``Table.check_settings``)."""
    config, table, space = resolved.config, resolved.data, resolved.space
    if config.constraint or resolved.scalarize:
        raise ConfigError(f"--{'constraint' if config.constraint else 'scalarize'}: not with a "
                          "tabular benchmark, whose trials look results up instead of measuring "
                          "a model")
    table.check_settings(resolved)
    check_table(config, table, space, resolved.objectives)


def check_table(config: SearchConfig, table: Table, space: Space,
                objectives: Sequence[tuple[str, str]]) -> None:
    """Whether a search's settings fit ``table``: fidelity, epochs, objectives and space."""
    if config.fidelity != "epochs" or config.proxy_task:
        raise ConfigError(f"--fidelity {config.fidelity}: a table holds the real task's results "
                          "per epoch; use --fidelity epochs and no --proxy-task")
    if config.max_epochs > table.epochs:
        raise ConfigError(f"--max-epochs {config.max_epochs}: the table's runs have "
                          f"{table.epochs} epochs")
    for metric, _ in objectives:
        if metric not in (*table.metrics, SIM_TIME):
            raise ConfigError(f"--objective {metric}: the table has no {metric!r} column")
    check_space(space, table, f"--space {config.space}")


def check_space(space: Space, table: Table, flag: str) -> None:
    """A table keyed by genotypes fits ``space`` if the space searches nothing a genotype leaves
    out (else two architectures would share a row) and holds one of its architectures at least
    (else the table is for another space); a table keyed by hashes cannot be checked."""
    if describe(space, space.sample(random.Random(0))) is None:
        return
    check_genotype_space(space)
    for key in table.runs:
        try:
            from_genotype(space, key)
            return
        except SpaceError:
            continue
    raise ConfigError(f"{flag}: none of the {len(table.runs)} architectures in {table.path} "
                      f"belongs to space {space.name}")


def replay(table: Table, space: Space, arch: dict[str, Any], seed: int,
           max_epochs: int) -> list[dict[str, Any]]:
    """What a trial of ``arch`` reports, epoch by epoch: the table's run for ``seed``, with
    ``sim_time_s`` the training time so far. One function for Tune's trials and the simulator
    (``raynas.tabular.simulate``), so both see the same numbers."""
    key = table_key(space, arch)
    curve = table.run(key, seed)
    elapsed = np.cumsum(curve.values["train_time_s"][:max_epochs]).tolist()
    series = {name: values[:max_epochs].tolist() for name, values in curve.values.items()
              if name not in ("test_accuracy", "train_time_s")}
    fixed = {**curve.static, "table_seed": curve.seed, "arch_hash": arch_hash(arch)}
    return [{**{name: values[i] for name, values in series.items()}, **fixed, "epoch": i + 1,
             TIME_ATTR: i + 1, SIM_TIME: elapsed[i]} for i in range(len(elapsed))]


def tabular_trial(config: dict[str, Any], *, space: Space, data: Table,
                  settings: TrialSettings) -> None:
    """The Tune function trainable of a tabular search: replay one run of the table epoch by
    epoch (a checkpoint holds the epoch, so paused and retried trials go on where they were)."""
    done = 0
    if checkpoint := tune.get_checkpoint():
        with checkpoint.as_directory() as folder:
            done = json.loads((Path(folder) / "epoch.json").read_text())
    for epoch, metrics in enumerate(replay(data, space, space.decode(config), settings.seed,
                                           settings.max_epochs), start=1):
        if epoch <= done:
            continue
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "epoch.json").write_text(json.dumps(epoch))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def tabular_outcome(table: Table, space: Space, arch: dict[str, Any],
                    results: list[Any]) -> dict[str, float]:
    """What the end of a tabular search reports instead of retraining: the best architecture's
    test accuracy in the table and the simulated training time of all trials (Tune results)."""
    return {"test_accuracy": table.test_accuracy(table_key(space, arch)),
            SIM_TIME: math.fsum((r.metrics or {}).get(SIM_TIME, 0.0) for r in results)}
