"""The benchmarks of ``raynas bench``, as descriptors that own their flags: the command is a loop
over ``BENCHMARKS``, and an application adds its benchmark from its own folder with one
``register(Benchmark(...))``. Light on imports (no torch, Ray or MLflow), so the CLI builds its
parser from it; each benchmark's heavy work sits behind its lazy ``run`` reference."""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from raynas.registry import Ref, Registry, load_ref


@dataclass(frozen=True)
class Benchmark:
    """``raynas bench NAME``: ``arguments`` adds its flags to its parser; ``run`` (a
    ``"package.module:main"``, imported on use) takes the parsed flags and returns an exit code
    or None. ``suite``: it is one of ``raynas bench all``, which gives it ``--quick`` and
    ``--output`` only and reads the ``common.Report`` it writes there."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Ref
    suite: bool = False

    @classmethod
    def of_suite(cls, name: str, help: str, run: Ref) -> Benchmark:
        """A benchmark of ``raynas bench all``: its flags are ``--quick`` (its CI size) and
        ``--output`` (default ``bench_NAME.json``), the two that ``all`` passes on."""
        return cls(name, help, functools.partial(_suite_flags, name=name), run, suite=True)


def _suite_flags(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--quick", action="store_true", help="a reduced size (CI)")
    parser.add_argument("--output", default=f"bench_{name}.json",
                        help="JSON results (the rows also in FILE.csv; default: %(default)s)")


BENCHMARKS: Registry[Benchmark] = Registry("raynas bench", "benchmark")
register = BENCHMARKS.register


def suite() -> list[Benchmark]:
    """The benchmarks of ``raynas bench all``, in the order they were registered."""
    return [b for b in BENCHMARKS.values() if b.suite]


def run_all(args: argparse.Namespace) -> int | None:
    """``raynas bench all``: every suite benchmark in turn, each into FOLDER/bench_NAME.json
    (+ .csv), then their ratios side by side, read back from the reports they wrote."""
    folder, flag = Path(args.output), " --quick" if args.quick else ""
    for benchmark in suite():
        print(f"\n== raynas bench {benchmark.name}{flag}")
        output = folder / f"bench_{benchmark.name}.json"
        code = load_ref(benchmark.run)(argparse.Namespace(quick=args.quick, output=str(output)))
        if code:
            return code
    print("\n== summary")
    for benchmark in suite():
        report = json.loads((folder / f"bench_{benchmark.name}.json").read_text())
        print(f"{benchmark.name:<11} ratio {report['ratio']:6.2f}  target {report['target']:<28} "
              f"({report['meaning'].removeprefix('ratio = ')})")
    return None
