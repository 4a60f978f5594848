"""``raynas bench latency``: the latency table's predictions against measured latencies.

For a random sample of a space's architectures, the latency predicted from the table (the sum
of its units' latencies, see ``raynas.objectives.latency``) is compared with the latency of the
network, measured twice. It reports the mean absolute percentage error (MAPE), the Spearman
rank correlation (what matters to a search: does the table order candidates right), the
measurement's own stability (how far the two measurements of one network differ), and as its
ratio the median of predicted / measured (1.00 = unbiased; the table misses the network's glue
between units, e.g. Python calls, so it tends to under-predict small networks).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

from raynas.bench.common import Print, Report, machine
from raynas.data import load_dataset
from raynas.errors import ConfigError
from raynas.estimation import load_space
from raynas.models import build_model, latency_units
from raynas.objectives.latency import LatencyTable
from raynas.objectives.measure import measure_latency
from raynas.space import arch_hash


def run(space_name: str, dataset: str, samples: int, batch: int, device: str, threads: int,
        seed: int, output: Path, table_dir: Path | None = None,
        print_fn: Print = print) -> Report:
    torch.set_num_threads(threads)
    space = load_space(space_name)
    data = load_dataset(dataset, seed=seed)
    table = LatencyTable(device, batch, table_dir)
    cached = len(table.entries)
    rng = random.Random(seed)
    rows = []
    started = time.perf_counter()
    for index in range(samples):
        arch = space.sample(rng)
        units = latency_units(space, arch, data.input_shape, data.num_classes)
        if units is None:
            raise ConfigError(f"--space {space_name}: its model {space.model!r} lists no parts "
                              "for the latency table")
        tic = time.perf_counter()
        predicted = table.predict(units)
        profiled = time.perf_counter() - tic
        model = build_model(space, arch, data.input_shape, data.num_classes).to(device)
        first, second = (measure_latency(model, data.input_shape, batch) for _ in range(2))
        measured = statistics.median([first, second])
        rows.append({"arch_hash": arch_hash(arch), "layers": len(arch.get("layers", [])),
                     "units": len(units), "predicted_ms": round(predicted, 4),
                     "measured_ms": round(measured, 4), "measured_1_ms": round(first, 4),
                     "measured_2_ms": round(second, 4), "profile_s": round(profiled, 2)})
        print_fn(f"[{index + 1}/{samples}] {arch_hash(arch)}: {len(units)} units, predicted "
                 f"{predicted:.3f} ms, measured {first:.3f} / {second:.3f} ms")
    predicted = [r["predicted_ms"] for r in rows]
    measured = [r["measured_ms"] for r in rows]
    ratios = [p / m for p, m in zip(predicted, measured, strict=True)]
    summary = {
        "mape_percent": round(100 * statistics.mean(abs(r - 1) for r in ratios), 1),
        "spearman": round(float(spearmanr(predicted, measured).statistic), 3),
        "repeat_spread_percent": round(100 * statistics.median(
            abs(r["measured_1_ms"] - r["measured_2_ms"]) / r["measured_ms"] for r in rows), 1),
        "table_entries_before": cached, "table_entries_after": len(table.entries),
        "table": str(table.path), "wall_s": round(time.perf_counter() - started, 1),
    }
    print_fn(f"MAPE {summary['mape_percent']} %, Spearman {summary['spearman']}, two "
             f"measurements of one network differ by {summary['repeat_spread_percent']} % "
             f"(median); table {table.path}: {cached} -> {len(table.entries)} entries")
    report = Report("latency", statistics.median(ratios), "predicted / measured latency, median",
                    "1.00 (MAPE and Spearman say how close)", rows, machine(), summary,
                    {"space": space_name, "dataset": dataset, "samples": samples,
                     "batch": batch, "device": device, "threads": threads, "seed": seed})
    report.write(output, print_fn)
    return report


def main(args: argparse.Namespace) -> None:
    """``raynas bench latency``: its flags checked, then ``run``."""
    if min(args.samples, args.batch, args.threads) < 1:
        raise ConfigError("raynas bench latency: --samples, --batch and --threads must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU on this machine")
    space, samples = ("small_cnn", 8) if args.quick else (args.space, args.samples)
    run(space, args.dataset, samples, args.batch, args.device, args.threads, args.seed,
        Path(args.output))
