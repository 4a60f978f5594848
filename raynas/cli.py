"""The ``raynas`` command: ``search`` and ``spaces``.

User errors print one line, ``raynas: error: <what>``, on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import fields

from raynas.errors import RaynasError

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage dump), like every other raynas error."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"raynas: error: {message}\n")


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def build_parser() -> Parser:
    from raynas.config import SearchConfig

    defaults = SearchConfig()
    parser = Parser(prog="raynas", description="Neural Architecture Search on Ray Tune + MLflow")
    commands = parser.add_subparsers(dest="command", parser_class=Parser)

    s = commands.add_parser("search", help="run a search (defaults: a real NAS on digits)")
    s.add_argument("--space", default=defaults.space,
                   help="built-in space name or YAML path (default: %(default)s)")
    s.add_argument("--dataset", default=defaults.dataset,
                   help="digits | mnist5k | npz:PATH | torchvision:NAME:DIR | folder:DIR "
                        "(default: %(default)s)")
    s.add_argument("--strategy", default=defaults.strategy, help="default: %(default)s")
    s.add_argument("--scheduler", default=defaults.scheduler, help="default: %(default)s")
    s.add_argument("--objective", action="append", default=None, metavar="METRIC:max|min",
                   help="what to optimise, repeatable for a multi-objective strategy (nsga2), "
                        "e.g. --objective val_accuracy:max --objective params:min "
                        "(default: val_accuracy:max; nsga2 adds params:min)")
    s.add_argument("--num-trials", type=int, default=None,
                   help="trials to run (default: 16; grid: the whole grid)")
    s.add_argument("--max-epochs", type=int, default=defaults.max_epochs,
                   help="epochs per trial at most (default: %(default)s)")
    s.add_argument("--fidelity", default=defaults.fidelity, metavar="epochs|data[:MIN]",
                   help="what the schedulers' budget counts: epochs, or training-data fractions "
                        "MIN..1 in steps of x3, each trained for --max-epochs (data = 1/9, 1/3, 1;"
                        " default: %(default)s)")
    s.add_argument("--concurrency", type=int, default=defaults.concurrency,
                   help="trials at a time (default: %(default)s)")
    s.add_argument("--cpus-per-trial", type=_fraction, default=defaults.cpus_per_trial)
    s.add_argument("--gpus-per-trial", type=_fraction, default=defaults.gpus_per_trial,
                   help="fractions allowed, e.g. 0.25 packs four trials per GPU")
    s.add_argument("--seed", type=int, default=defaults.seed)
    s.add_argument("--experiment", default=None, help="MLflow experiment (default: the space)")
    s.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
    s.add_argument("--address", default=None, help="existing Ray cluster (ray://… or auto)")
    s.add_argument("--storage", default=None,
                   help="Tune results directory or URI (default: $RAYNAS_STORAGE, else Tune's)")
    s.add_argument("--retrain-epochs", type=int, default=defaults.retrain_epochs,
                   help="epochs to retrain the best architecture on train+val "
                        "(default: %(default)s)")
    s.add_argument("--json", action="store_true",
                   help="print a JSON summary as the last line of stdout")

    commands.add_parser("spaces", help="list the built-in search spaces and their sizes")

    b = commands.add_parser("bench", help="benchmarks")
    which = b.add_subparsers(dest="bench", parser_class=Parser, required=True)
    st = which.add_parser("strategies", help="every strategy against random search")
    st.add_argument("--strategies", default="evolution,rl,tpe,gp,bohb,nsga2",
                    help="comma-separated (random is always the baseline; "
                         "default: %(default)s)")
    st.add_argument("--seeds", type=int, default=3)
    st.add_argument("--trials", type=int, default=12, help="trial budget per search")
    st.add_argument("--max-epochs", type=int, default=2)
    st.add_argument("--concurrency", type=int, default=2)
    st.add_argument("--space", default="macro_cnn")
    st.add_argument("--dataset", default="digits")
    st.add_argument("--synthetic-budget", type=int, default=300)
    st.add_argument("--synthetic-seeds", type=int, default=10)
    st.add_argument("--synthetic-only", action="store_true", help="skip the real trainings")
    st.add_argument("--output", default="bench_strategies.txt",
                    help="table file (raw curves in FILE.json; default: %(default)s)")
    return parser


def cmd_search(args: argparse.Namespace) -> None:
    from raynas.config import SearchConfig
    from raynas.experiment import search

    names = {f.name for f in fields(SearchConfig)}
    config = SearchConfig(**{k: v for k, v in vars(args).items() if k in names})
    result = search(config)
    best = result.best
    print(f"\nbest architecture ({best['arch_hash']}, trial {best['trial_id']}):")
    print(json.dumps(best["arch"], indent=2))
    print(f"validation accuracy (search): {best['val_accuracy']:.4f}")
    print(f"test accuracy (retrained on train+val, held-out test): {best['test_accuracy']:.4f}")
    print(f"trials: {result.num_trials} ({result.num_failed} failed), "
          f"wall time {result.wall_time_s:.0f} s")
    print(f"model: {result.model_uri}  (MLflow run {result.parent_run_id})")
    print(f"browse the results: {result.ui}")
    if args.json:
        print(json.dumps(result.to_json(), sort_keys=True), flush=True)


def cmd_spaces(args: argparse.Namespace) -> None:
    from raynas.space import builtin_spaces, load_space

    for name, path in builtin_spaces().items():
        space = load_space(path)
        size = space.size()
        shown = "infinite (continuous)" if size == float("inf") else f"{size:,.0f}"
        print(f"{name:<14} {len(space.decisions()):>4} decisions  size {shown:<22} "
              f"{space.description}")


def cmd_bench(args: argparse.Namespace) -> None:
    from pathlib import Path

    from raynas.bench import strategies
    from raynas.errors import ConfigError
    from raynas.strategies import STRATEGIES, check_names

    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    for name in names:
        check_names(name, "fifo")
    if min(args.seeds, args.trials, args.max_epochs, args.concurrency, args.synthetic_budget,
           args.synthetic_seeds) < 1:
        raise ConfigError("raynas bench strategies: every count must be >= 1")
    strategies.run([n for n in names if n in STRATEGIES], args.seeds, args.trials,
                   args.max_epochs, args.concurrency, args.space, args.dataset,
                   args.synthetic_budget, args.synthetic_seeds, Path(args.output),
                   real=not args.synthetic_only)
    print(f"written: {args.output} (raw curves: {args.output}.json)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        {"search": cmd_search, "spaces": cmd_spaces, "bench": cmd_bench}[args.command](args)
    except RaynasError as exc:
        print(f"raynas: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("raynas: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
