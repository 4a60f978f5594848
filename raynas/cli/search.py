"""``raynas search``, ``extend``, ``sync`` and ``spaces``: run a search and go on with it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from raynas.cli.common import fraction, json_flag, print_result, tracking_flag


def add_search_flags(s: argparse.ArgumentParser) -> None:
    """Every ``SearchConfig`` field as a flag (``raynas launch`` checks its search flags with
    these too)."""
    from raynas.config import RETRAIN_SHARE, SearchConfig

    defaults = SearchConfig()
    s.add_argument("--space", default=defaults.space,
                   help="built-in space name or YAML path (default: %(default)s)")
    s.add_argument("--dataset", default=defaults.dataset,
                   help="digits | mnist5k | npz:PATH | torchvision:NAME:DIR | folder:DIR "
                        "(default: %(default)s)")
    s.add_argument("--strategy", default=defaults.strategy, help="default: %(default)s")
    s.add_argument("--scheduler", default=defaults.scheduler,
                   help="default: %(default)s; mo-asha (with several --objective) stops "
                        "dominated trials early")
    s.add_argument("--objective", action="append", default=None, metavar="METRIC:max|min",
                   help="what to optimise, repeatable for a multi-objective strategy (nsga2), "
                        "e.g. --objective val_accuracy:max --objective params:min "
                        "(default: val_accuracy:max; nsga2 adds params:min)")
    s.add_argument("--scalarize", choices=("weighted", "chebyshev"), default=None,
                   help="several --objective as one normalised number (the metric "
                        "'scalarized', minimised), so any strategy takes them (default: "
                        "weighted for strategies that are not multi-objective)")
    s.add_argument("--weights", default=None, metavar="W1,W2,...",
                   help="one weight per --objective for --scalarize (default: equal)")
    s.add_argument("--constraint", action="append", default=None, metavar="METRIC<=BOUND",
                   help="repeatable, e.g. --constraint latency_ms<=5 --constraint "
                        "params<=200000 (also <, >=, >); candidates that break params, flops "
                        "or the latency table's prediction are rejected before training")
    s.add_argument("--latency-batch", type=int, default=defaults.latency_batch,
                   help="batch size latency_ms is measured at (default: %(default)s)")
    s.add_argument("--latency-device", choices=("cpu", "cuda"), default=None,
                   help="where latency_ms is measured (default: where the trial trains)")
    s.add_argument("--num-trials", type=int, default=None,
                   help="trials to run (default: 16; grid: the whole grid)")
    s.add_argument("--max-epochs", type=int, default=defaults.max_epochs,
                   help="epochs per trial at most (default: %(default)s)")
    s.add_argument("--fidelity", default=defaults.fidelity,
                   metavar="epochs|data|width|resolution[:MIN]",
                   help="what the schedulers' budget counts: epochs, or fractions MIN..1 in "
                        "steps of x3 of the training data, the channels or the input resolution, "
                        "each trained for --max-epochs (data = 1/9, 1/3, 1; default: "
                        "%(default)s)")
    s.add_argument("--proxy-task", default=None, metavar="KNOB=FRACTION[,...]",
                   help="train every trial on a cheaper proxy task, e.g. width=0.5,resolution=0.5"
                        " (knobs: data, width, resolution; the final retraining is full-size)")
    s.add_argument("--proxy", default=defaults.proxy,
                   help="--strategy zero_cost: synflow | snip | grad_norm | naswot | params "
                        "(default: %(default)s)")
    s.add_argument("--zc-candidates", type=int, default=defaults.zc_candidates,
                   help="--strategy zero_cost: architectures sampled and scored "
                        "(default: %(default)s)")
    s.add_argument("--zc-top-k", type=int, default=defaults.zc_top_k,
                   help="--strategy zero_cost: the best-scored ones trained "
                        "(default: %(default)s)")
    s.add_argument("--supernet", default=defaults.supernet, metavar="spos|enas",
                   help="--strategy oneshot: train the supernet on uniformly sampled paths "
                        "(spos) or on an ENAS controller's (default: %(default)s)")
    s.add_argument("--oneshot-searcher", default=defaults.oneshot_searcher, metavar="STRATEGY",
                   help="--strategy oneshot: the strategy that searches against the trained "
                        "supernet (default: %(default)s)")
    s.add_argument("--concurrency", type=int, default=defaults.concurrency,
                   help="trials at a time (default: %(default)s)")
    s.add_argument("--cpus-per-trial", type=fraction, default=defaults.cpus_per_trial)
    s.add_argument("--gpus-per-trial", type=fraction, default=defaults.gpus_per_trial,
                   help="fractions allowed, e.g. 0.25 packs four trials per GPU")
    s.add_argument("--seed", type=int, default=defaults.seed)
    s.add_argument("--experiment", default=None, help="MLflow experiment (default: the space)")
    tracking_flag(s)
    s.add_argument("--address", default=None, help="existing Ray cluster (ray://… or auto)")
    s.add_argument("--storage", default=None,
                   help="Tune results directory or URI (default: $RAYNAS_STORAGE, else Tune's)")
    s.add_argument("--retrain-epochs", type=int, default=defaults.retrain_epochs,
                   help="epochs to retrain the best architecture on train+val "
                        "(default: %(default)s)")
    s.add_argument("--max-retries", type=int, default=defaults.max_retries,
                   help="restarts of a trial whose worker dies, from its last checkpoint "
                        "(default: %(default)s)")
    s.add_argument("--max-failed-trials", type=int, default=None,
                   help="end the search once this many trials have failed (default: never)")
    s.add_argument("--tracking-wait", type=float, default=defaults.tracking_wait,
                   metavar="SECONDS",
                   help="how long the end of a search waits for an unreachable MLflow before "
                        "leaving the rest to `raynas sync` (default: %(default)s)")
    s.add_argument("--time-budget", default=None, metavar="DURATION",
                   help="wall-clock limit of the whole search, e.g. 90s, 20m, 1.5h: trials "
                        f"stop starting and running with {RETRAIN_SHARE * 100:.0f}%% of it left, "
                        "and the final retraining runs as many --retrain-epochs as fit in the "
                        "rest")
    s.add_argument("--resume", default=None, metavar="FOLDER|auto",
                   help="finish the interrupted search in FOLDER (printed when it started); "
                        "its settings come from there. auto: the search lives in "
                        "STORAGE/EXPERIMENT; resume it if it is there, else start it there "
                        "(a job that restarts runs the same command)")
    json_flag(s)



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



def cmd_search(args: argparse.Namespace) -> None:
    from dataclasses import fields

    from raynas.config import SearchConfig
    from raynas.experiment.resolve import resolve

    names = {f.name for f in fields(SearchConfig)}
    config = SearchConfig(**{k: v for k, v in vars(args).items() if k in names})
    # Before Ray, MLflow and Tune are even imported (a resumed search resolves its saved one).
    resolved = None if config.resume not in (None, "auto") else resolve(config)
    from raynas.experiment.driver import search

    _summary(search(config, resolved=resolved), args.json)


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
