"""``raynas bench ranking``: does a cheap estimator rank architectures as training them does?

Two parts, in one run:

1. The data-free floor (``synflow_nb201``): synflow over NAS-Bench-201 cells against the
   table's CIFAR-10 accuracy, which must reproduce the published Spearman 0.737.
2. A hard small task: MNIST-1D (``--dataset mnist1d``), where architectures really differ.
   ``--archs`` cells of the NAS-Bench-201 space, built 1-D for its (1, 40) sequences and
   stratified by size, are each trained stand-alone on ``--seeds`` seeds; the mean test accuracy
   is the truth. Every estimator is scored against it on the same cells: the accuracy after 1
   and 3 epochs of that training (validation split), each zero-cost proxy, params and FLOPs,
   and the inherited accuracy of SPOS and ENAS supernets (validation split, BatchNorm
   recalibrated per cell). Each gets Kendall tau and Spearman rho with bootstrap 95 % intervals,
   the top-5 overlap and its cost in seconds.

The stand-alone trainings are the expensive part, so they are kept in a table under
``$RAYNAS_CACHE/ranking/`` keyed by the architecture and every training setting (dataset, split
seed, epochs, seed, space): a re-run with the same settings trains nothing. Everything runs in
this process on one thread, so the costs compare.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raynas.bench.common import Print, Report, machine
from raynas.config import cache_dir
from raynas.data import load_dataset
from raynas.errors import ConfigError
from raynas.estimation import load_space
from raynas.estimation.oneshot import SupernetTraining, evaluate, inherit
from raynas.estimation.proxies import PROXIES, minibatch, score
from raynas.estimation.ranking import agreement
from raynas.estimation.train import Run, seed_everything, tensors
from raynas.models import build_model, describe
from raynas.objectives.measure import count_flops, count_params
from raynas.space import Arch, Space, arch_hash
from raynas.strategies.weight_sharing import SAMPLERS, controller
from raynas.strategies.zero_cost import sample_candidates
from raynas.tabular.nb201 import OPS
from raynas.tabular.synflow_nb201 import synflow_nb201

DATASET = "mnist1d"
#: NAS-Bench-201's cell space on MNIST-1D: C=8, N=1 (a 3-stage network of ~10k-60k weights;
#: the published CNN reaches 94 %), trained as the tabular benchmarks train (Adam, cosine).
SPACE: dict[str, Any] = {
    "name": "nb201_mnist1d", "model": "nb201",
    "description": "NAS-Bench-201 cell space, 1-D, for MNIST-1D (C=8, N=1)",
    "space": {"channels": 8, "cells_per_stage": 1,
              "cell": {f"edge_{j}_{i}": {"choice": list(OPS)} for j in (1, 2, 3)
                       for i in range(j)},
              "train": {"lr": 0.01, "weight_decay": 1.0e-4, "batch_size": 64,
                        "optimizer": "adam"}},
}
EARLY = (1, 3)  # the epochs whose accuracy is an early-stopping estimate
TOP_K = 5
POOL = 20  # candidates sampled per stratum before one is drawn from each size stratum
SPLIT = "cell.edge_1_0"  # few-shot: the edge whose op splits the supernet (it feeds all nodes)
FEW_SHOT = len(OPS)  # sub-supernets (one per op), each fine-tuned 1/FEW_SHOT of the epochs
SUPERNETS = ("spos", "spos_no_recal", "spos_few_shot", "enas", "fair")


# --- the ground truth ----------------------------------------------------------------------
class TruthTable:
    """Stand-alone trainings kept on disk, keyed by architecture and training settings."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict[str, Any]] = (json.loads(path.read_text())
                                                if path.is_file() else {})

    @staticmethod
    def key(arch: Arch, settings: dict[str, Any]) -> str:
        text = json.dumps({"arch": arch, "settings": settings}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def save(self) -> None:
        """Write the rows, with those another run has written meanwhile (two runs may build
        one truth, each its own cells)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            self.rows = {**json.loads(self.path.read_text()), **self.rows}
        partial = self.path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(self.rows, indent=0, sort_keys=True))
        partial.replace(self.path)


def stand_alone(space: Space, arch: Arch, data: Any, arrays: list[torch.Tensor], epochs: int,
                seed: int) -> dict[str, Any]:
    """Train ``arch`` for ``epochs``: validation accuracy and seconds after each epoch, and the
    test accuracy at the end."""
    x, y, x_val, y_val, x_test, y_test = arrays
    run = Run(space, arch, data.input_shape, data.num_classes, epochs, torch.device("cpu"), seed)
    val, seconds, started = [], [], time.perf_counter()
    for _ in run.epochs(x, y, epochs):
        seconds.append(round(time.perf_counter() - started, 3))
        val.append(run.evaluate(x_val, y_val)[1])
    return {"val_accuracy": val, "seconds": seconds, "test_accuracy": run.evaluate(x_test,
                                                                                   y_test)[1]}


def stratified(space: Space, count: int, input_shape: tuple[int, ...], num_classes: int,
               seed: int) -> list[Arch]:
    """``count`` distinct cells spread over the sizes of the space: a pool of random cells,
    sorted by parameter count, cut into ``count`` strata of equal share, one drawn from each."""
    pool = sample_candidates(space, POOL * count, seed)
    sizes = [count_params(build_model(space, a, input_shape, num_classes)) for a in pool]
    order = np.argsort(sizes, kind="stable")
    rng = random.Random(seed)
    return [pool[int(rng.choice(stratum))] for stratum in np.array_split(order, count)]


def ground_truth(space: Space, sample: list[Arch], data: Any, arrays: list[torch.Tensor],
                 seeds: int, epochs: int, split_seed: int, print_fn: Print
                 ) -> tuple[list[list[dict[str, Any]]], int]:
    """Each cell's stand-alone runs (one per seed), from the table where it has them, and how
    many were trained now."""
    table = TruthTable(cache_dir() / "ranking" / f"{SPACE['name']}.json")
    settings = {"dataset": DATASET, "split_seed": split_seed, "epochs": epochs, "space": SPACE}
    runs: list[list[dict[str, Any]]] = []
    started, trained = time.perf_counter(), 0
    for n, arch in enumerate(sample, start=1):
        per_seed = []
        for s in range(seeds):
            key = TruthTable.key(arch, {**settings, "seed": s})
            if key not in table.rows:
                table = TruthTable(table.path)  # another run may have trained it meanwhile
            if key not in table.rows:
                table.rows[key] = stand_alone(space, arch, data, arrays, epochs, s)
                table.save()
                trained += 1
            per_seed.append(table.rows[key])
        runs.append(per_seed)
        print_fn(f"stand-alone {n}/{len(sample)} {describe(space, arch)}: test accuracy "
                 + ", ".join(f"{r['test_accuracy']:.3f}" for r in per_seed)
                 + f" ({time.perf_counter() - started:.0f} s so far)")
    return runs, trained


# --- the estimators ------------------------------------------------------------------------
Scores = tuple[list[float], float]  # (a score per cell, the seconds it took for all)


def proxies(space: Space, archs: list[Arch], data: Any, seed: int) -> dict[str, Scores]:
    """Every zero-cost proxy on one class-balanced training batch, and FLOPs."""
    x, y = tensors(torch.device("cpu"), *minibatch(data.x_train, data.y_train, seed))
    out = {}
    for name in PROXIES:
        started = time.perf_counter()
        values = [score(space, a, name, x, y, data.num_classes, seed) for a in archs]
        out[name] = values, time.perf_counter() - started
    started = time.perf_counter()
    flops = []
    for arch in archs:
        seed_everything(seed, arch)
        flops.append(float(count_flops(build_model(space, arch, data.input_shape,
                                                   data.num_classes), data.input_shape)))
    out["flops"] = flops, time.perf_counter() - started
    return out


def train_supernet(space: Space, data: Any, arrays: list[torch.Tensor], sampler: str,
                   epochs: int, seed: int, fair: bool = False) -> SupernetTraining:
    """A supernet trained ``epochs`` epochs with ``sampler`` paths (``fair``: FairNAS's)."""
    x, y, x_val, y_val = arrays[:4]
    training = SupernetTraining(space, data.input_shape, data.num_classes,
                                controller(sampler, space), epochs, torch.device("cpu"), seed,
                                fair=fair)
    for _ in range(epochs):
        training.train_epoch(x, y, x_val, y_val)
    return training


def inherited(training: SupernetTraining, archs: list[Arch], arrays: list[torch.Tensor],
              seed: int, recalibrated: bool = True) -> list[float]:
    """Each cell's validation accuracy with the supernet's weights, BatchNorm recalibrated on
    its path (as the one-shot strategy scores) or, to measure what that is worth, with the
    running statistics the supernet's training left (shared by every path)."""
    x, _, x_val, y_val = arrays[:4]
    if recalibrated:
        return [inherit(training.supernet, a, x, x_val, y_val, seed)[1] for a in archs]
    return [evaluate(training.supernet.use(a), x_val, y_val)[1] for a in archs]


def supernet(space: Space, archs: list[Arch], data: Any, arrays: list[torch.Tensor],
             sampler: str, epochs: int, seed: int, fair: bool = False) -> Scores:
    """The inherited validation accuracy of each cell, and the seconds training and scoring
    took."""
    started = time.perf_counter()
    training = train_supernet(space, data, arrays, sampler, epochs, seed, fair)
    return inherited(training, archs, arrays, seed), time.perf_counter() - started


def few_shot(training: SupernetTraining, archs: list[Arch], arrays: list[torch.Tensor],
             epochs: int, seed: int) -> list[float]:
    """Few-shot NAS (Zhao et al., ICML 2021): split the trained supernet on ``SPLIT``'s op into
    one sub-supernet per op, each starting from its weights and trained ``epochs`` more on the
    paths that take that op; a cell is scored by the sub-supernet of its op."""
    x, y, x_val, y_val = arrays[:4]
    space = training.space
    ops = {training.space.encode(a)[SPLIT] for a in archs}
    subs = {}
    for op in sorted(ops):
        sub = copy.deepcopy(training)
        sub.restrict({SPLIT: op}, epochs)
        for _ in range(epochs):
            sub.train_epoch(x, y, x_val, y_val)
        subs[op] = sub
    return [inherit(subs[space.encode(a)[SPLIT]].supernet, a, x, x_val, y_val, seed)[1]
            for a in archs]


# --- the study -----------------------------------------------------------------------------
def mnist1d_study(archs: int, seeds: int, epochs: int, supernet_epochs: int, seed: int,
                  print_fn: Print) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    space = load_space(SPACE)
    data = load_dataset(DATASET, seed=seed)
    arrays = tensors(torch.device("cpu"), data.x_train, data.y_train, data.x_val, data.y_val,
                     data.x_test, data.y_test)
    sample = stratified(space, archs, data.input_shape, data.num_classes, seed)
    started = time.perf_counter()
    runs, trained = ground_truth(space, sample, data, arrays, seeds, epochs, seed, print_fn)
    truth_seconds = time.perf_counter() - started
    truth = [float(np.mean([r["test_accuracy"] for r in rs])) for rs in runs]
    # what building the whole truth costs, measured when it was trained (cached or not)
    full_cost = sum(r["seconds"][-1] for rs in runs for r in rs)

    estimates: dict[str, Scores] = {}
    for k in EARLY:
        estimates[f"epoch_{k}"] = ([rs[0]["val_accuracy"][k - 1] for rs in runs],
                                   sum(rs[0]["seconds"][k - 1] for rs in runs))
    estimates.update(proxies(space, sample, data, seed))
    for sampler in SAMPLERS:
        started = time.perf_counter()
        training = train_supernet(space, data, arrays, sampler, supernet_epochs, seed)
        trained_s = time.perf_counter() - started
        estimates[sampler] = (inherited(training, sample, arrays, seed),
                              time.perf_counter() - started)
        print_fn(f"{sampler} supernet ({supernet_epochs} epochs): {trained_s:.0f} s")
        if sampler == "spos":
            started = time.perf_counter()
            estimates["spos_no_recal"] = (inherited(training, sample, arrays, seed, False),
                                          trained_s + time.perf_counter() - started)
            started = time.perf_counter()
            estimates["spos_few_shot"] = (
                few_shot(training, sample, arrays, max(1, supernet_epochs // FEW_SHOT), seed),
                trained_s + time.perf_counter() - started)
            print_fn(f"few-shot split on {SPLIT}: {estimates['spos_few_shot'][1]:.0f} s")
    # FairNAS: as many path updates as SPOS (each step trains one path per op)
    estimates["fair"] = supernet(space, sample, data, arrays, "spos",
                                 max(1, supernet_epochs // FEW_SHOT), seed, fair=True)
    print_fn(f"fair supernet: {estimates['fair'][1]:.0f} s")
    summary: dict[str, Any] = {
        "archs": len(sample), "seeds": seeds, "epochs": epochs,
        "truth_train_seconds": round(full_cost, 1),
        "truth_seconds_this_run": round(truth_seconds, 1), "trained_this_run": trained,
        "truth_range": [round(min(truth), 4), round(max(truth), 4)],
        "seed_agreement_kendall": agreement(
            [rs[0]["test_accuracy"] for rs in runs],
            [rs[-1]["test_accuracy"] for rs in runs], TOP_K, seed).kendall if seeds > 1 else None,
        "estimators": {},
    }
    for name, (values, seconds) in estimates.items():
        result = agreement(values, truth, TOP_K, seed)
        summary["estimators"][name] = {**result.row(), "seconds": round(seconds, 2)}
        print_fn(f"{name:>10}: {result.line()}, {seconds:.1f} s")
    best = int(np.argmax(truth))
    for name in SUPERNETS:
        pick = int(np.argmax(estimates[name][0]))
        summary[f"{name}_pick_test_accuracy"] = truth[pick]
        summary[f"{name}_cost_share"] = round(estimates[name][1] / full_cost, 4)
    summary["best_test_accuracy"] = truth[best]
    rows = [{"arch_hash": arch_hash(a), "cell": describe(space, a), "truth": truth[i],
             **{name: v[0][i] for name, v in estimates.items()}}
            for i, a in enumerate(sample)]
    return summary, rows


def run(nb201_cells: int, archs: int, seeds: int, epochs: int, supernet_epochs: int,
        seed: int, output: Path, print_fn: Print = print) -> Report:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        host = machine()
        nb201, nb201_rows = (synflow_nb201(nb201_cells, seed, print_fn) if nb201_cells
                             else ({}, []))
        study, rows = mnist1d_study(archs, seeds, epochs, supernet_epochs, seed, print_fn)
    finally:
        torch.set_num_threads(threads)
    proxies_only = [name for name in study["estimators"] if name in PROXIES or name == "flops"]
    best_proxy = max(proxies_only, key=lambda n: _finite(study["estimators"][n]["kendall"]))
    best_net = max(SUPERNETS, key=lambda n: _finite(study["estimators"][n]["kendall"]))
    ratio = study["estimators"][best_net]["kendall"] - study["estimators"][best_proxy]["kendall"]
    print_fn(f"best supernet {best_net} (Kendall {study['estimators'][best_net]['kendall']:+.3f})"
             f" against the best data-free or zero-cost proxy {best_proxy} "
             f"({study['estimators'][best_proxy]['kendall']:+.3f})")
    report = Report("ranking", ratio,
                    "ratio = Kendall tau of the best supernet minus that of the best zero-cost "
                    "proxy, against stand-alone test accuracy on MNIST-1D", "> 0", rows, host,
                    {"nb201_synflow": nb201, "mnist1d": study},
                    {"nb201_cells": nb201_cells, "archs": archs, "seeds": seeds,
                     "epochs": epochs, "supernet_epochs": supernet_epochs, "seed": seed,
                     "space": SPACE, "threads": 1})
    report.write(output, print_fn)
    if nb201_rows:
        output.with_suffix(".nb201.json").write_text(json.dumps(nb201_rows) + "\n")
    return report


def _finite(value: float) -> float:
    return value if value == value else -2.0  # NaN (a constant estimate) ranks last


def main(args: argparse.Namespace) -> None:
    """``raynas bench ranking``: the sizes of ``--quick`` or of the flags, checked, then run."""
    nb201_cells, archs, seeds, epochs, supernet_epochs = (
        (40, 6, 1, 3, 2) if args.quick else
        (args.nb201_cells, args.archs, args.seeds, args.epochs, args.supernet_epochs))
    if archs < 3 or seeds < 1 or epochs < max(EARLY) or supernet_epochs < 1 or nb201_cells < 0:
        raise ConfigError(f"raynas bench ranking: --archs must be >= 3, --seeds and "
                          f"--supernet-epochs >= 1, --epochs >= {max(EARLY)}, --nb201-cells "
                          ">= 0")
    run(nb201_cells, archs, seeds, epochs, supernet_epochs, args.seed, Path(args.output))
