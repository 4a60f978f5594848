"""``raynas tabulate``: a tabular benchmark made here, by training architectures for real (one
Ray task each) and writing their curves in the table format ``raynas.tabular.table`` reads."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raynas.errors import ConfigError
from raynas.space import Space
from raynas.tabular.table import table_format, table_key

if TYPE_CHECKING:
    from raynas.data import Dataset
import time

import pandas as pd
import ray
import torch

from raynas.estimation.train import Run, tensors
from raynas.objectives.measure import count_flops, count_params
from raynas.runtime import ray_session, stderr


def train_rows(space: Space, arch: dict[str, Any], data: Dataset, epochs: int, seeds: int,
               cpus: float = 1.0) -> list[dict[str, Any]]:
    """Train ``arch`` for ``epochs`` once per seed (as a search trial trains) and return the
    table rows: val/test accuracy and loss after each epoch and the epoch's training time."""
    torch.set_num_threads(max(1, int(cpus)))
    device = torch.device("cpu")
    x, y, x_val, y_val, x_test, y_test = tensors(device, data.x_train, data.y_train, data.x_val,
                                                 data.y_val, data.x_test, data.y_test)
    key, rows = table_key(space, arch), []
    for seed in range(seeds):
        run = Run(space, arch, data.input_shape, data.num_classes, epochs, device, seed)
        static = {"params": count_params(run.model),
                  "flops": count_flops(run.model, data.input_shape)}
        steps = run.epochs(x, y, epochs)
        while True:
            started = time.perf_counter()
            train_loss = next(steps, None)
            seconds = time.perf_counter() - started
            if train_loss is None:
                break
            val_loss, val_accuracy = run.evaluate(x_val, y_val)
            _, test_accuracy = run.evaluate(x_test, y_test)
            rows.append({"arch": key, "seed": seed, "epoch": run.epoch,
                         "val_accuracy": val_accuracy, "test_accuracy": test_accuracy,
                         "train_time_s": round(seconds, 4), "val_loss": val_loss,
                         "train_loss": train_loss, **static})
    return rows


def pick_architectures(space: Space, count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` distinct architectures: the whole space when it is that small, else a random
    sample (distinct by table key)."""
    if space.size() <= count:
        return space.grid()
    rng, chosen = random.Random(seed), {}
    for _ in range(100 * count):
        arch = space.sample(rng)
        chosen.setdefault(table_key(space, arch), arch)
        if len(chosen) == count:
            break
    return list(chosen.values())


def write_table(rows: list[dict[str, Any]], output: Path) -> None:
    kind = table_format(output, "--output")
    frame = pd.DataFrame(rows).sort_values(["arch", "seed", "epoch"], kind="stable")
    if kind == "csv":
        frame.to_csv(output, index=False)
    elif kind in ("json", "jsonl"):
        frame.to_json(output, orient="records", lines=kind == "jsonl", indent=None)
    else:
        frame.to_parquet(output, index=False)


def tabulate(space: Space, data: Dataset, num_archs: int, epochs: int, seeds: int,
             output: Path, seed: int = 0, cpus: float = 1.0, address: str | None = None,
             progress: Callable[[str], None] | None = None) -> tuple[int, float]:
    """Train ``num_archs`` architectures of ``space`` (one Ray task each, on the local Ray, the
    one already started, or the cluster at ``address``) and write the table to ``output``.
    Returns (architectures, total training seconds)."""
    progress = progress or stderr
    for name, value in (("--num-archs", num_archs), ("--epochs", epochs), ("--seeds", seeds)):
        if value < 1:
            raise ConfigError(f"{name}: must be >= 1")
    table_format(output, "--output")  # before the trainings, not after
    archs = pick_architectures(space, num_archs, seed)
    with ray_session(address, progress):
        task = ray.remote(train_rows).options(num_cpus=cpus)
        shared = ray.put(data)
        pending = {task.remote(space, arch, shared, epochs, seeds, cpus): arch
                   for arch in archs}
        rows: list[dict[str, Any]] = []
        while pending:
            (ref,), _ = ray.wait(list(pending))
            arch = pending.pop(ref)
            new = ray.get(ref)
            rows += new
            final = max(r["val_accuracy"] for r in new if r["epoch"] == epochs)
            progress(f"{len(archs) - len(pending)}/{len(archs)} {table_key(space, arch)}: "
                     f"val_accuracy={final:.4f}")
    write_table(rows, output)
    return len(archs), math.fsum(r["train_time_s"] for r in rows)
