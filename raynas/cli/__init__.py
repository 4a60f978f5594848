"""The ``raynas`` command, one module per command group: ``search`` (search, extend, sync,
spaces), ``results`` (retrain, export, report, compare, pareto), ``bench`` (benchmarks,
tabulate), ``cluster`` (launch, status, stop), ``data`` (synth-medical) and ``ofa`` (ofa train,
specialize).

User errors print one line, ``raynas: error: <what>``, on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from raynas.cli import bench, cluster, data, ofa, results, search
from raynas.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, Parser
from raynas.errors import RaynasError, SearchInterrupted


def build_parser() -> Parser:
    parser = Parser(prog="raynas", description="Neural Architecture Search on Ray Tune + MLflow")
    commands = parser.add_subparsers(dest="command", parser_class=Parser)
    for group in (search, results, bench, cluster, data, ofa):
        group.add(commands)
    return parser


def _check_pins(args: argparse.Namespace) -> None:
    """In a job from ``raynas launch cluster``: every node must run the submitter's versions."""
    import os

    from raynas.deploy.launcher import PIN_ENV

    if args.command == "search" and os.environ.get(PIN_ENV):
        from raynas.deploy.launcher import check_pins

        print(f"raynas: {check_pins(os.environ[PIN_ENV], args.address)}", file=sys.stderr,
              flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        _check_pins(args)
        # SIGTERM (a pod or job being stopped) ends a search like Ctrl-C: Tune saves its
        # state, and the search can be resumed.
        signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
        args.func(args)
    except SearchInterrupted as exc:
        print(f"raynas: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RaynasError as exc:
        print(f"raynas: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("raynas: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
