"""``raynas search``, ``extend``, ``sync`` and ``spaces``: run a search and go on with it."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from raynas.cli.common import fraction, json_flag, print_result, tracking_flag
from raynas.config import RETRAIN_SHARE, SearchConfig
from raynas.data import usages
from raynas.models import BUILDERS, SpaceFlag


class StrategyOptions(argparse.Action):
    """``--strategy-option KEY=VALUE``, repeatable: the pairs as one dict (a key given twice
    keeps its last value); the strategy's options convert and check the values."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 value: Any, option_string: str | None = None) -> None:
        key, equals, text = str(value).partition("=")
        if not equals or not key.strip():
            parser.error(f"argument {option_string}: expected KEY=VALUE, got {value!r}")
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest) or {}), key.strip(): text})


class FixField(argparse.Action):
    """A builder's ``SpaceFlag``: its value goes into ``fixed``, under the field it sets."""

    def __init__(self, *args: Any, space_flag: SpaceFlag, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.space_flag = space_flag

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 value: Any, option_string: str | None = None) -> None:
        value = str(Path(value).expanduser().resolve()) if self.space_flag.path else value
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest) or {}),
                                       self.space_flag.field: value})


def add_search_flags(s: argparse.ArgumentParser) -> None:
    """Every ``SearchConfig`` setting as a flag of the same name, defaulting to its value there
    (``raynas launch`` checks its search flags with these too)."""
    s.add_argument("--space", help="built-in space name or YAML path (default: %(default)s)")
    s.add_argument("--dataset",
                   help=f"{' | '.join(usages())} (default: %(default)s; `raynas data kinds` "
                        "says what each is)")
    s.add_argument("--strategy", help="default: %(default)s; `raynas strategies` lists them "
                                      "and their options")
    s.add_argument("--strategy-option", dest="strategy_options", action=StrategyOptions,
                   metavar="KEY=VALUE",
                   help="an option of --strategy, repeatable, e.g. --strategy zero_cost "
                        "--strategy-option proxy=snip --strategy-option top_k=4 (`raynas "
                        "strategies` lists each strategy's options and their defaults)")
    s.add_argument("--scheduler",
                   help="default: %(default)s; mo-asha (with several --objective) stops "
                        "dominated trials early")
    s.add_argument("--objective", action="append", metavar="METRIC:max|min",
                   help="what to optimise, repeatable for a multi-objective strategy (nsga2), "
                        "e.g. --objective val_accuracy:max --objective params:min "
                        "(default: val_accuracy:max; nsga2 adds params:min)")
    s.add_argument("--scalarize", choices=("weighted", "chebyshev"),
                   help="several --objective as one normalised number (the metric "
                        "'scalarized', minimised), so any strategy takes them (default: "
                        "weighted for strategies that are not multi-objective)")
    s.add_argument("--weights", metavar="W1,W2,...",
                   help="one weight per --objective for --scalarize (default: equal)")
    s.add_argument("--constraint", action="append", metavar="METRIC<=BOUND",
                   help="repeatable, e.g. --constraint latency_ms<=5 --constraint "
                        "params<=200000 (also <, >=, >); candidates that break params, flops "
                        "or the latency table's prediction are rejected before training")
    s.add_argument("--latency-batch", type=int,
                   help="batch size latency_ms is measured at (default: %(default)s)")
    s.add_argument("--latency-device", choices=("cpu", "cuda"),
                   help="where latency_ms is measured (default: where the trial trains)")
    s.add_argument("--num-trials", type=int,
                   help="trials to run (default: 16; grid: the whole grid)")
    s.add_argument("--max-epochs", type=int,
                   help="epochs per trial at most (default: %(default)s)")
    s.add_argument("--fidelity", metavar="epochs|data|width|resolution[:MIN]",
                   help="what the schedulers' budget counts: epochs, or fractions MIN..1 in "
                        "steps of x3 of the training data, the channels or the input resolution, "
                        "each trained for --max-epochs (data = 1/9, 1/3, 1; default: "
                        "%(default)s)")
    s.add_argument("--proxy-task", metavar="KNOB=FRACTION[,...]",
                   help="train every trial on a cheaper proxy task, e.g. width=0.5,resolution=0.5"
                        " (knobs: data, width, resolution; the final retraining is full-size)")
    s.add_argument("--concurrency", type=int, help="trials at a time (default: %(default)s)")
    s.add_argument("--cpus-per-trial", type=fraction)
    s.add_argument("--gpus-per-trial", type=fraction,
                   help="fractions allowed, e.g. 0.25 packs four trials per GPU")
    s.add_argument("--seed", type=int)
    s.add_argument("--experiment", help="MLflow experiment (default: the space)")
    tracking_flag(s)
    s.add_argument("--address", help="existing Ray cluster (ray://… or auto)")
    s.add_argument("--storage",
                   help="Tune results directory or URI (default: $RAYNAS_STORAGE, else Tune's)")
    s.add_argument("--retrain-epochs", type=int,
                   help="epochs to retrain the best architecture on train+val "
                        "(default: %(default)s)")
    s.add_argument("--max-retries", type=int,
                   help="restarts of a trial whose worker dies, from its last checkpoint "
                        "(default: %(default)s)")
    s.add_argument("--max-failed-trials", type=int,
                   help="end the search once this many trials have failed (default: never)")
    s.add_argument("--tracking-wait", type=float, metavar="SECONDS",
                   help="how long the end of a search waits for an unreachable MLflow before "
                        "leaving the rest to `raynas sync` (default: %(default)s)")
    s.add_argument("--time-budget", metavar="DURATION",
                   help="wall-clock limit of the whole search, from the command's start, e.g. "
                        "90s, 20m, 1.5h: a plan times a few candidates first and chooses the "
                        "trials' share of the data, a cap on a candidate's epoch and rungs in "
                        f"seconds; trials stop with {RETRAIN_SHARE * 100:.0f}%% of it left, and "
                        "the final retraining runs as many --retrain-epochs as fit in the rest")
    s.add_argument("--no-budget-plan", dest="budget_plan", action="store_false",
                   help="with --time-budget: no plan (whole data, no cap, rungs in epochs)")
    s.add_argument("--resume", metavar="FOLDER|auto",
                   help="finish the interrupted search in FOLDER (printed when it started); "
                        "its settings come from there. auto: the search lives in "
                        "STORAGE/EXPERIMENT; resume it if it is there, else start it there "
                        "(a job that restarts runs the same command)")
    for builder in BUILDERS.values():
        for flag in builder.flags:
            s.add_argument(flag.flag, dest="fixed", action=FixField, space_flag=flag,
                           metavar=flag.metavar, help=f"{flag.help} (spaces of model "
                                                      f"{builder.name})")
    json_flag(s)
    s.set_defaults(**SearchConfig().flat())  # one place for the defaults: the config's


def add(commands: Any) -> None:
    s = commands.add_parser("search", help="run a search (defaults: a real NAS on digits)")
    s.set_defaults(func=cmd_search)
    add_search_flags(s)

    ex = commands.add_parser("extend", help="give a finished search more trials (same strategy "
                                             "state, same MLflow parent run)")
    ex.set_defaults(func=cmd_extend)
    ex.add_argument("target", metavar="FOLDER|EXPERIMENT",
                    help="a search folder, or an MLflow experiment (its latest search)")
    ex.add_argument("--num-trials", type=int, required=True, help="trials to add")
    tracking_flag(ex, "where to look up EXPERIMENT")
    json_flag(ex)

    sy = commands.add_parser("sync", help="write a search's pending MLflow records (after an "
                                          "outage of the tracking server)")
    sy.set_defaults(func=cmd_sync)
    sy.add_argument("folder", metavar="FOLDER")
    sy.add_argument("--wait", type=float, default=60.0,
                    help="seconds to keep retrying an unreachable server (default: %(default)s)")

    commands.add_parser("spaces", help="list the built-in search spaces and their sizes"
                        ).set_defaults(func=cmd_spaces)
    commands.add_parser("strategies", help="list the strategies and their --strategy-option "
                                           "keys").set_defaults(func=cmd_strategies)



def config_of(args: argparse.Namespace) -> SearchConfig:
    """The one place the flat flags map onto the config's groups: each flag is named like its
    setting (``--cpus-per-trial`` is ``resources.cpus_per_trial``)."""
    names = SearchConfig().flat()
    return SearchConfig.of({k: v for k, v in vars(args).items() if k in names})


def cmd_search(args: argparse.Namespace) -> None:
    from raynas.experiment.resolve import resolve

    started = time.time()  # --time-budget counts from here: the data's loading is spent too
    config = config_of(args)
    # Before Ray, MLflow and Tune are even imported (a resumed search resolves its saved one).
    resolved = None if config.tracking.resume not in (None, "auto") else resolve(config)
    from raynas.experiment.driver import search

    _summary(search(config, resolved=resolved, started=started), args.json)


def cmd_extend(args: argparse.Namespace) -> None:
    from raynas.experiment.driver import extend

    _summary(extend(args.target, args.num_trials, args.tracking_uri), args.json)


def _summary(result: Any, as_json: bool) -> None:
    best = result.best
    # what val_accuracy holds: a segmentation's Dice, a detection's mAP
    score = ("Dice" if "test_dice" in best else "mAP@[.5:.95]" if "test_map" in best
             else "accuracy")
    lines = [f"\nbest architecture ({best['arch_hash']}, trial {best['trial_id']}):",
             json.dumps(best["arch"], indent=2),
             f"validation {score} (search): {best['val_accuracy']:.4f}"]
    if "sim_time_s" in best:  # a tabular search: nothing was trained
        test = best["test_accuracy"]  # NaN: the table has none (NAS-Bench-201's package)
        lines.append(f"test accuracy (the table's, no retraining): "
                     f"{f'{test:.4f}' if test == test else 'not in this table'}; "
                     f"simulated training time of the search: {best['sim_time_s']:.0f} s")
    else:
        auc = (f" (ROC AUC {best['test_auc']:.4f})" if "test_auc" in best else
               f" (mAP@.5 {best['test_map_50']:.4f})" if "test_map_50" in best else "")
        lines.append(f"test {score} (retrained on train+val, held-out test): "
                     f"{best['test_accuracy']:.4f}{auc}")
    lines += [f"trials: {result.num_trials} ({result.num_failed} failed), "
              f"wall time {result.wall_time_s:.0f} s",
              f"model: {result.model_uri}  (MLflow run {result.parent_run_id})",
              f"browse the results: {result.ui}",
              f"search folder (Tune results, --resume, raynas sync): {result.folder}"]
    print_result("\n".join(lines), result.to_json(), as_json)


def cmd_sync(args: argparse.Namespace) -> None:
    from raynas.errors import TrackingError
    from raynas.experiment.driver import sync

    if left := sync(args.folder, args.wait):
        raise TrackingError(f"MLflow still unreachable: {left} writes pending in {args.folder}")


def cmd_spaces(args: argparse.Namespace) -> None:
    from raynas.estimation import load_space
    from raynas.space import builtin_spaces

    for name, path in builtin_spaces().items():
        space = load_space(path)
        size = space.size()
        shown = "infinite (continuous)" if size == float("inf") else f"{size:,.0f}"
        print(f"{name:<14} {len(space.decisions()):>4} decisions  size {shown:<22} "
              f"{space.description}")


def cmd_strategies(args: argparse.Namespace) -> None:
    from dataclasses import fields

    from raynas.strategies import STRATEGIES
    from raynas.strategies.base import OPTION

    options = {s.name: [(f"{f.name}={f.default}", f.metadata.get("help", ""))
                        for f in fields(s.options)] for s in STRATEGIES.values()}
    width = max((len(pair) for rows in options.values() for pair, _ in rows), default=0)
    for strategy in STRATEGIES.values():
        print(f"{strategy.name:<10} {strategy.description}")
        for pair, text in options[strategy.name]:
            print(f"{'':<10} {OPTION} {pair:<{width}}  {text}".rstrip())
