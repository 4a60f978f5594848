"""``raynas bench oneshot``: how far weight sharing can be trusted, and what it saves.

A sample of NAS-Bench-201 cells is scored two ways on ``digits``: by inheriting the weights of
one supernet (trained with ``--supernet`` sampling, BatchNorm recalibrated per cell) and by
training each cell stand-alone. The Kendall tau between the two rankings says how reliable the
supernet's ranking is (weight-sharing rankings are known to be poor: Yu et al. 2020, Zela et
al. 2020); the wall and CPU time of the supernet search (training + scoring every cell) against
training every cell is the saving. Both sides run in this process on one thread, so their
times compare; ``ratio`` is stand-alone wall time over the supernet search's.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from scipy.stats import kendalltau

from raynas.bench.common import Print, Report, machine
from raynas.data import load_dataset
from raynas.errors import ConfigError
from raynas.estimation import load_space
from raynas.estimation.oneshot import SupernetTraining, inherit
from raynas.estimation.train import Run, tensors
from raynas.models import describe
from raynas.space import arch_hash
from raynas.strategies.weight_sharing import SAMPLERS, controller
from raynas.strategies.zero_cost import sample_candidates

SPACE = "nb201_cell"


class Clock:
    """Wall and CPU seconds (this process, all threads) since it was made."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def run(archs: int, epochs: int, supernet_epochs: int, sampler: str, seed: int, output: Path,
        print_fn: Print = print) -> Report:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(archs, epochs, supernet_epochs, sampler, seed, output, print_fn)
    finally:
        torch.set_num_threads(threads)


def _run(archs: int, epochs: int, supernet_epochs: int, sampler: str, seed: int, output: Path,
         print_fn: Print) -> Report:
    host = machine()
    space = load_space(SPACE)
    data = load_dataset("digits", seed=seed)
    cpu = torch.device("cpu")
    x, y, x_val, y_val = tensors(cpu, data.x_train, data.y_train, data.x_val, data.y_val)
    sample = sample_candidates(space, archs, seed)

    clock = Clock()
    training = SupernetTraining(space, data.input_shape, data.num_classes,
                                controller(sampler, space), supernet_epochs, cpu, seed)
    for _ in range(supernet_epochs):
        training.train_epoch(x, y, x_val, y_val)
    supernet_train = clock.read()
    inherited = [inherit(training.supernet, a, x, x_val, y_val, seed)[1] for a in sample]
    supernet_wall, supernet_cpu = clock.read()
    print_fn(f"supernet ({sampler}, {supernet_epochs} epochs): trained in {supernet_train[0]:.1f}"
             f" s, {len(sample)} cells scored in {supernet_wall - supernet_train[0]:.1f} s")

    rows = []
    for arch, score in zip(sample, inherited, strict=True):
        clock = Clock()
        trained = Run(space, arch, data.input_shape, data.num_classes, epochs, cpu, seed)
        for _ in trained.epochs(x, y, epochs):
            pass
        accuracy = trained.evaluate(x_val, y_val)[1]
        wall, cpu_s = clock.read()
        rows.append({"arch_hash": arch_hash(arch), "cell": describe(space, arch),
                     "inherited_val_accuracy": score, "standalone_val_accuracy": accuracy,
                     "standalone_wall_s": round(wall, 3), "standalone_cpu_s": round(cpu_s, 3)})
        print_fn(f"{rows[-1]['cell']}: inherited {score:.3f}, stand-alone {accuracy:.3f} "
                 f"({wall:.1f} s)")
    standalone = [r["standalone_val_accuracy"] for r in rows]
    tau = kendalltau(inherited, standalone) if len(set(inherited)) > 1 else None
    top = max(range(len(rows)), key=lambda i: inherited[i])
    standalone_wall = sum(r["standalone_wall_s"] for r in rows)
    standalone_cpu = sum(r["standalone_cpu_s"] for r in rows)
    summary = {
        "kendall_tau": float(tau.statistic) if tau else math.nan,
        "kendall_p_value": float(tau.pvalue) if tau else math.nan,
        "supernet_pick_standalone_accuracy": standalone[top],
        "best_standalone_accuracy": max(standalone),
        "supernet_search_wall_s": round(supernet_wall, 2),
        "supernet_search_cpu_s": round(supernet_cpu, 2),
        "standalone_trials_wall_s": round(standalone_wall, 2),
        "standalone_trials_cpu_s": round(standalone_cpu, 2),
    }
    print_fn(f"Kendall tau (inherited vs stand-alone accuracy, {len(rows)} cells): "
             f"{summary['kendall_tau']:.3f} (p = {summary['kendall_p_value']:.3f})")
    print_fn(f"the supernet's top cell: {standalone[top]:.3f} stand-alone (best of the sample: "
             f"{max(standalone):.3f})")
    print_fn(f"supernet search: {supernet_wall:.1f} s wall, {supernet_cpu:.1f} s CPU; "
             f"{len(rows)} stand-alone trials: {standalone_wall:.1f} s wall, "
             f"{standalone_cpu:.1f} s CPU")
    report = Report("oneshot", standalone_wall / supernet_wall,
                    f"ratio = wall time of {len(rows)} stand-alone trials / the supernet "
                    "search's (higher: weight sharing is cheaper; trust its ranking only as far "
                    "as the Kendall tau above)", "> 1", rows, host, summary,
                    {"space": SPACE, "dataset": "digits", "archs": archs,
                     "epochs": epochs, "supernet_epochs": supernet_epochs, "sampler": sampler,
                     "seed": seed, "threads": 1})
    report.write(output, print_fn)
    return report


def main(args: argparse.Namespace) -> None:
    """``raynas bench oneshot``: the sizes of ``--quick`` or of the flags, checked, then
    ``run``."""
    archs, epochs, supernet_epochs = ((6, 3, 6) if args.quick else
                                      (args.archs, args.epochs, args.supernet_epochs))
    if archs < 3 or min(epochs, supernet_epochs) < 1:
        raise ConfigError("raynas bench oneshot: --archs must be >= 3, --epochs and "
                          "--supernet-epochs >= 1")
    if args.supernet not in SAMPLERS:
        raise ConfigError(f"--supernet: unknown sampler {args.supernet!r}; known: "
                          f"{', '.join(SAMPLERS)}")
    run(archs, epochs, supernet_epochs, args.supernet, args.seed, Path(args.output))
