"""``raynas bench estimators``: how well each cheap performance estimate ranks architectures,
what it costs, and what zero-cost pre-filtering saves.

A sample of architectures is trained for real on ``digits`` (one process, one thread, so times
compare); each estimate - the zero-cost proxies, one epoch of training, a proxy task (half the
channels, half the resolution), learning-curve extrapolation from the first epochs - is rank-
correlated (Spearman, Kendall) with the final validation accuracy. Then: pre-filtering with
``--proxy`` and training only the best-scored k, where k is the smallest that reaches the same
final quality (within ``tolerance``) as training all; ``ratio`` is its time over training all.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr

from raynas.data import Dataset, load_dataset
from raynas.errors import ConfigError
from raynas.estimation import load_space
from raynas.estimation.fidelity import REAL_TASK, ProxyTask
from raynas.estimation.learning_curve import extrapolate
from raynas.estimation.proxies import PROXIES, minibatch, score
from raynas.estimation.train import Run, tensors
from raynas.space import Arch, Space, arch_hash
from raynas.strategies.zero_cost import sample_candidates

BENCH_SPACE: dict[str, Any] = {
    "name": "bench_estimators",
    "model": "macro",
    "description": "1-3 layers of every op x 8-32 channels x every connection; fixed training",
    "space": {
        "stem_channels": 16,
        "layers": {"repeat": [1, 3], "block": {
            "op": {"choice": ["conv_3x3", "conv_5x5", "conv_7x7", "dw_conv_3x3", "dw_conv_5x5",
                              "max_pool_3x3", "avg_pool_3x3", "identity", "zero"]},
            "channels": {"choice": [8, 16, 32]},
            "stride": {"choice": [1, 2]},
            "connection": {"choice": ["series", "skip", "dense", "parallel"]},
        }},
        "train": {"lr": 3.0e-3, "weight_decay": 1.0e-4, "batch_size": 64, "optimizer": "adam"},
    },
}
PROXY_TASK = ProxyTask(width=0.5, resolution=0.5)
TOLERANCE = 0.01  # "equal final quality": best accuracy within this of training all


@dataclass
class Curve:
    """Validation accuracy after each epoch, and the seconds spent up to then."""

    accuracy: list[float]
    seconds: list[float]


def train(space: Space, arch: Arch, data: Dataset, epochs: int, seed: int,
          task: ProxyTask = REAL_TASK) -> Curve:
    run = Run(space, arch, data.input_shape, data.num_classes, epochs, torch.device("cpu"),
              seed, task)
    x, y, x_val, y_val = tensors(torch.device("cpu"), data.x_train, data.y_train, data.x_val,
                                 data.y_val)
    curve = Curve([], [])
    started = time.perf_counter()
    for _ in run.epochs(x, y, epochs):
        curve.accuracy.append(run.evaluate(x_val, y_val)[1])
        curve.seconds.append(time.perf_counter() - started)
    return curve


def correlations(estimates: Sequence[float], finals: Sequence[float]) -> tuple[float, float]:
    """(Spearman, Kendall); NaN where an estimate is constant (it ranks nothing)."""
    if len(set(estimates)) < 2:
        return math.nan, math.nan
    return float(spearmanr(estimates, finals).statistic), float(
        kendalltau(estimates, finals).statistic)


def needed_k(order: Sequence[int], finals: Sequence[float], tolerance: float) -> int:
    """How many architectures, trained in ``order``, until one is within ``tolerance`` of the
    best final accuracy of all."""
    target = max(finals) - tolerance
    return next(k for k, i in enumerate(order, start=1) if finals[i] >= target)


def prefilter(scores: Sequence[float], score_seconds: float, finals: Sequence[float],
              train_seconds: Sequence[float], tolerance: float, seed: int) -> dict[str, Any]:
    """Zero-cost pre-filtering + training the top-k against training all, at equal quality;
    with the k a random order would need (mean over 1,000 shuffles) for comparison."""
    order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
    k = needed_k(order, finals, tolerance)
    rng = np.random.default_rng(seed)
    random_k = float(np.mean([needed_k(rng.permutation(len(finals)), finals, tolerance)
                              for _ in range(1000)]))
    filtered = score_seconds + sum(train_seconds[i] for i in order[:k])
    return {"k": k, "of": len(scores), "random_order_k": random_k,
            "prefilter_seconds": filtered, "train_all_seconds": sum(train_seconds),
            "ratio": filtered / sum(train_seconds), "tolerance": tolerance,
            "best_all": max(finals), "best_top_k": max(finals[i] for i in order[:k])}


def run(archs: int, epochs: int, seed: int, proxy: str, output: Path,
        print_fn: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``archs`` sampled architectures for ``epochs`` epochs, evaluate every estimate,
    print the table and the ``ratio:`` line, write ``output`` (JSON) and its CSV twin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(archs, epochs, seed, proxy, output, print_fn)
    finally:
        torch.set_num_threads(threads)


def _run(archs: int, epochs: int, seed: int, proxy: str, output: Path,
         print_fn: Callable[[str], None]) -> dict[str, Any]:
    space = load_space(BENCH_SPACE)
    data = load_dataset("digits", seed=seed)
    sample = sample_candidates(space, archs, seed)
    x, y = (torch.as_tensor(a) for a in minibatch(data.x_train, data.y_train, seed))
    estimates: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}
    for name in PROXIES:
        for arch in sample:
            started = time.perf_counter()
            estimates.setdefault(name, []).append(score(space, arch, name, x, y,
                                                        data.num_classes, seed))
            seconds.setdefault(name, []).append(time.perf_counter() - started)
    full = [train(space, arch, data, epochs, seed) for arch in sample]
    finals = [c.accuracy[-1] for c in full]
    estimates["train_1_epoch"] = [c.accuracy[0] for c in full]
    seconds["train_1_epoch"] = [c.seconds[0] for c in full]
    task = f"proxy_task({PROXY_TASK.describe()})"
    cheap = [train(space, arch, data, epochs, seed, PROXY_TASK) for arch in sample]
    estimates[task] = [c.accuracy[-1] for c in cheap]
    seconds[task] = [c.seconds[-1] for c in cheap]
    seen = max(3, epochs // 3)  # log2 needs three points
    if seen < epochs:
        name = f"curve_extrapolation({seen}_epochs)"
        for c in full:
            started = time.perf_counter()
            forecast = extrapolate(range(1, seen + 1), c.accuracy[:seen], epochs)
            estimates.setdefault(name, []).append(
                forecast.mean if forecast else c.accuracy[seen - 1])
            seconds.setdefault(name, []).append(c.seconds[seen - 1] + time.perf_counter()
                                                - started)
    train_seconds = [c.seconds[-1] for c in full]
    rows = []
    for name, values in estimates.items():
        rho, tau = correlations(values, finals)
        rows.append({"estimator": name, "spearman": rho, "kendall": tau,
                     "seconds_per_arch": float(np.mean(seconds[name]))})
    saving = prefilter(estimates[proxy], sum(seconds[proxy]), finals, train_seconds,
                       TOLERANCE, seed)
    lines = [f"{len(sample)} architectures of {space.name} trained {epochs} epochs on digits "
             f"(final val accuracy {min(finals):.3f}..{max(finals):.3f}, "
             f"{float(np.mean(train_seconds)):.2f} s each, 1 thread)",
             f"{'estimator':<40}{'spearman':>9}{'kendall':>9}{'s/arch':>9}"]
    lines += [f"{r['estimator']:<40}{r['spearman']:>9.3f}{r['kendall']:>9.3f}"
              f"{r['seconds_per_arch']:>9.3f}" for r in rows]
    lines.append(f"pre-filtering with {proxy}: the top {saving['k']} of {saving['of']} reach "
                 f"{saving['best_top_k']:.3f} (all: {saving['best_all']:.3f}, tolerance "
                 f"{TOLERANCE}); a random order needs {saving['random_order_k']:.1f} on average; "
                 f"{saving['prefilter_seconds']:.1f} s vs {saving['train_all_seconds']:.1f} s")
    report = {"space": BENCH_SPACE, "epochs": epochs, "seed": seed, "proxy": proxy,
              "estimators": rows, "prefilter": saving,
              "architectures": [{"arch_hash": arch_hash(a), "arch": a, "final": f,
                                 "train_seconds": s, "curve": c.accuracy,
                                 **{n: v[i] for n, v in estimates.items()}}
                                for i, (a, f, s, c) in enumerate(zip(
                                    sample, finals, train_seconds, full, strict=True))]}
    output.write_text(json.dumps(report, indent=1))
    with output.with_suffix(".csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["arch_hash", "final_val_accuracy", "train_seconds", *estimates])
        for i, arch in enumerate(sample):
            writer.writerow([arch_hash(arch), finals[i], train_seconds[i],
                             *(v[i] for v in estimates.values())])
    for line in lines:
        print_fn(line)
    print_fn(f"written: {output} and {output.with_suffix('.csv')}")
    print_fn(f"ratio: {saving['ratio']:.2f}")
    return report


def main(args: argparse.Namespace) -> None:
    """``raynas bench estimators``: the sizes of ``--quick`` or of the flags, checked, then
    ``run``."""
    archs, epochs = (6, 4) if args.quick else (args.archs, args.epochs)
    if archs < 3 or epochs < 4:
        raise ConfigError("raynas bench estimators: --archs must be >= 3 and --epochs >= 4")
    if args.proxy not in PROXIES:
        raise ConfigError(f"--proxy: unknown zero-cost proxy {args.proxy!r}; known: "
                          f"{', '.join(PROXIES)}")
    run(archs, epochs, args.seed, args.proxy, Path(args.output))
