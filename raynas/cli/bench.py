"""``raynas bench …`` and ``raynas tabulate``: benchmarks, and tabular benchmarks made here."""

from __future__ import annotations

import argparse
from typing import Any

from raynas.bench.registry import BENCHMARKS
from raynas.cli.common import Parser, fraction
from raynas.registry import load_ref


def add(commands: Any) -> None:
    _add_tabulate(commands)
    which = commands.add_parser("bench", help="benchmarks").add_subparsers(
        dest="bench", parser_class=Parser, required=True)
    for benchmark in BENCHMARKS.values():
        parser = which.add_parser(benchmark.name, help=benchmark.help)
        parser.set_defaults(func=cmd_bench)
        benchmark.arguments(parser)


def _add_tabulate(commands: Any) -> None:
    tb = commands.add_parser("tabulate", help="train architectures for real and write a "
                                              "tabular benchmark (--dataset tabular:PATH)")
    tb.set_defaults(func=cmd_tabulate)
    tb.add_argument("--space", default="nb201_cell", help="default: %(default)s")
    tb.add_argument("--dataset", default="digits", help="default: %(default)s")
    tb.add_argument("--num-archs", type=int, default=20,
                    help="architectures (all of them when the space is that small; "
                         "default: %(default)s)")
    tb.add_argument("--epochs", type=int, default=4, help="default: %(default)s")
    tb.add_argument("--seeds", type=int, default=1, help="runs per architecture (default: "
                                                         "%(default)s)")
    tb.add_argument("--seed", type=int, default=0, help="picks the architectures and splits")
    tb.add_argument("--cpus-per-task", type=fraction, default=1.0)
    tb.add_argument("--address", default=None, help="existing Ray cluster (ray://… or auto)")
    tb.add_argument("--output", default="table.csv",
                    help=".csv, .json, .jsonl or .parquet (default: %(default)s)")


def cmd_bench(args: argparse.Namespace) -> None:
    """``raynas bench NAME``: the benchmark's own ``run``, imported now."""
    code = load_ref(BENCHMARKS[args.bench].run)(args)
    if code:
        raise SystemExit(code)


def cmd_tabulate(args: argparse.Namespace) -> None:
    import time
    from pathlib import Path

    from raynas.data import load_dataset
    from raynas.estimation import load_space
    from raynas.tabular.table import table_format
    from raynas.tabular.tabulate import tabulate

    started, output = time.time(), Path(args.output)
    table_format(output, "--output")  # before the trainings, not after
    space, data = load_space(args.space), load_dataset(args.dataset, seed=args.seed)
    archs, seconds = tabulate(space, data, args.num_archs, args.epochs, args.seeds, output,
                              args.seed, args.cpus_per_task, args.address)
    print(f"written: {output}: {archs} architectures x {args.seeds} seeds x {args.epochs} "
          f"epochs ({seconds:.0f} s of training, {time.time() - started:.0f} s wall); search "
          f"it with: raynas search --space {args.space} --dataset tabular:{output} "
          f"--max-epochs {args.epochs}")
