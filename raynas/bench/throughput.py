"""``raynas bench throughput``: training samples/second of raynas's training loop
(``raynas.estimation.train.Run.epochs``, what every trial and the final retraining run) against
the loop anyone would write by hand in PyTorch, on the same model, data and threads.

Both sides train the same architecture (built by the same builder from the same seed) on the
``digits`` training split with the same optimizer and batch size, one thread each (a trial with
one CPU runs one). The hand-written loop is the plain idiom: shuffle, slice batches, zero_grad,
forward, loss, backward, step; whatever ``Run.epochs`` does beyond it (its seeded generator, the
per-batch loss sum, the LR schedule, the non-finite loss check) is what the ratio measures.
Repeats alternate which side runs first; the ratio is the median of the per-repeat ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional

from raynas.bench.common import Print, Report, interleaved, machine, paired_ratio
from raynas.data import load_dataset
from raynas.estimation import load_space
from raynas.estimation.train import Run, seed_everything, tensors
from raynas.models import build_model

ARCH: dict[str, Any] = {
    "space": "macro_cnn", "stem_channels": 16,
    "layers": [{"op": "conv_3x3", "channels": 32, "stride": 1, "connection": "skip"},
               {"op": "conv_3x3", "channels": 64, "stride": 2, "connection": "series"}],
    "train": {"lr": 1e-3, "weight_decay": 1e-5, "batch_size": 64, "optimizer": "adam"},
}
SEED = 0
FULL: dict[str, Any] = {"repeats": 7, "epochs": 3, "threads": 1}
QUICK: dict[str, Any] = {"repeats": 3, "epochs": 1, "threads": 1}


def handwritten_epochs(model: Any, opt: Any, x: Any, y: Any, batch: int, epochs: int) -> None:
    """The baseline: the textbook PyTorch training loop."""
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            opt.zero_grad()
            loss = functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()


def run(repeats: int, epochs: int, threads: int, output: Path, print_fn: Print = print
        ) -> Report:
    space = load_space("macro_cnn")
    arch = space.validate(ARCH)
    data = load_dataset("digits", seed=SEED)
    cpu = torch.device("cpu")
    x, y = tensors(cpu, data.x_train, data.y_train)
    batch = ARCH["train"]["batch_size"]
    host = machine()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ours = Run(space, arch, data.input_shape, data.num_classes, 10_000, cpu, SEED)
        seed_everything(SEED, arch)
        model = build_model(space, arch, data.input_shape, data.num_classes)
        opt = torch.optim.Adam(model.parameters(), lr=ARCH["train"]["lr"],
                               weight_decay=ARCH["train"]["weight_decay"])

        def with_raynas(_: int) -> float:
            started = time.perf_counter()
            for _loss in ours.epochs(x, y, ours.epoch + epochs):
                pass
            return len(x) * epochs / (time.perf_counter() - started)

        def by_hand(_: int) -> float:
            started = time.perf_counter()
            handwritten_epochs(model, opt, x, y, batch, epochs)
            return len(x) * epochs / (time.perf_counter() - started)

        print_fn(f"throughput: {data.summary()}; {len(x)} samples x {epochs} epoch(s) per "
                 f"measurement, batch {batch}, {threads} thread(s), {repeats} repeats, "
                 "alternating (plus one warm-up each)")
        interleaved({"raynas": with_raynas, "handwritten": by_hand}, 1)  # warm-up
        rates = interleaved({"raynas": with_raynas, "handwritten": by_hand}, repeats)
    finally:
        torch.set_num_threads(before)
    rows = [{"repeat": i, "loop": name, "samples": len(x) * epochs,
             "samples_per_s": round(rate, 1)}
            for name, values in rates.items() for i, rate in enumerate(values)]
    summary = {f"{name}_samples_per_s": round(statistics.median(values), 1)
               for name, values in rates.items()}
    for name in rates:
        print_fn(f"{name:>11}: {summary[f'{name}_samples_per_s']:.0f} samples/s (median)")
    report = Report("throughput", paired_ratio(rates["raynas"], rates["handwritten"]),
                    "ratio = raynas samples/s / hand-written PyTorch loop's (higher is better)",
                    ">= 0.95", rows, host, summary,
                    {"repeats": repeats, "epochs": epochs, "threads": threads,
                     "arch": ARCH, "dataset": data.summary()})
    report.write(output, print_fn)
    return report


def main(args: argparse.Namespace) -> None:
    """``raynas bench throughput [--quick]``: ``run`` at its full or its CI size."""
    run(**(QUICK if args.quick else FULL), output=Path(args.output))
