"""What every ``raynas`` command shares: the parser class and the flags several commands take."""

from __future__ import annotations

import argparse

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
                        help="print a JSON summary as the last line of stdout")
