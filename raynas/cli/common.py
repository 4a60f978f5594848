"""What every ``raynas`` command shares: the parser class and the flags several commands take."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage dump), like every other raynas error."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"raynas: error: {message}\n")



def fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def tracking_flag(parser: argparse.ArgumentParser, what: str = "MLflow tracking URI") -> None:
    parser.add_argument("--tracking-uri", default=None,
                        help=f"{what} (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")


def json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the result as one JSON document, the whole of stdout (the "
                             "summary goes to stderr)")


def print_result(summary: str, document: dict[str, Any], as_json: bool) -> None:
    """stdout carries a command's result only - its summary, or with ``--json`` one JSON
    document (``raynas search --json | jq .``), the summary then joining the progress on
    stderr. Everything else (progress, Ray's and Tune's lines) goes to stderr."""
    if as_json:
        print(summary, file=sys.stderr, flush=True)
        print(json.dumps(document, sort_keys=True, default=str), flush=True)
    else:
        print(summary, flush=True)
