"""``raynas bench …`` and ``raynas tabulate``: benchmarks, and tabular benchmarks made here."""

from __future__ import annotations

import argparse
from typing import Any

from raynas.cli.common import Parser, fraction


def add(commands: Any) -> None:
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

    b = commands.add_parser("bench", help="benchmarks")
    which = b.add_subparsers(dest="bench", parser_class=Parser, required=True)
    la = which.add_parser("latency", help="latency table predictions against measured "
                                          "latencies (MAPE, Spearman)")
    la.set_defaults(func=cmd_bench_latency)
    la.add_argument("--quick", action="store_true", help="8 architectures of small_cnn")
    la.add_argument("--space", default="macro_cnn", help="default: %(default)s")
    la.add_argument("--dataset", default="digits", help="for the input shape and classes")
    la.add_argument("--samples", type=int, default=30, help="architectures (default: 30)")
    la.add_argument("--batch", type=int, default=1, help="default: %(default)s")
    la.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    la.add_argument("--threads", type=int, default=1, help="torch threads (default: 1, as a "
                                                           "trial with one CPU)")
    la.add_argument("--seed", type=int, default=0)
    la.add_argument("--output", default="bench_latency.json",
                    help="JSON report (rows also as .csv; default: %(default)s)")
    st = which.add_parser("strategies", help="every strategy against random search")
    st.set_defaults(func=cmd_bench_strategies)
    st.add_argument("--strategies", default="evolution,rl,tpe,gp,bohb,nsga2",
                    help="comma-separated (random is always the baseline; "
                         "default: %(default)s)")
    st.add_argument("--seeds", type=int, default=3)
    st.add_argument("--trials", type=int, default=12, help="trial budget per search")
    st.add_argument("--max-epochs", type=int, default=None,
                    help="default: 2; with --tabular: the table's epochs")
    st.add_argument("--concurrency", type=int, default=2)
    st.add_argument("--space", default="macro_cnn")
    st.add_argument("--tabular", default=None, metavar="PATH",
                    help="compare on this tabular benchmark at equal simulated training time "
                         "(NAS-Bench-201 style; give its --space) instead")
    st.add_argument("--sim-budget", type=float, default=None, metavar="SECONDS",
                    help="--tabular: simulated seconds per search (default: --trials full "
                         "trainings)")
    st.add_argument("--dataset", default="digits")
    st.add_argument("--synthetic-budget", type=int, default=300)
    st.add_argument("--synthetic-seeds", type=int, default=10)
    st.add_argument("--synthetic-only", action="store_true", help="skip the real trainings")
    st.add_argument("--output", default="bench_strategies.txt",
                    help="table file (raw curves in FILE.json; default: %(default)s)")
    mo = which.add_parser("mo-asha", help="mo-asha vs fifo, same trials, two objectives: "
                                          "hypervolume and wall time")
    mo.set_defaults(func=cmd_bench_mo_asha)
    mo.add_argument("--quick", action="store_true",
                    help="8 trials x 3 epochs (CI) instead of --trials x --max-epochs")
    mo.add_argument("--seeds", type=int, default=3, help="default: %(default)s")
    mo.add_argument("--trials", type=int, default=16, help="default: %(default)s")
    mo.add_argument("--max-epochs", type=int, default=9, help="default: %(default)s")
    mo.add_argument("--concurrency", type=int, default=2, help="default: %(default)s")
    mo.add_argument("--space", default="small_cnn", help="default: %(default)s")
    mo.add_argument("--dataset", default="digits", help="default: %(default)s")
    mo.add_argument("--output", default="bench_mo_asha.json",
                    help="JSON report (rows also as .csv; default: %(default)s)")
    nb = which.add_parser("nb201", help="NAS-Bench-201's strategy comparison (Table 5), "
                                        "reproduced on simulated time")
    nb.set_defaults(func=cmd_bench_nb201)
    nb.add_argument("--quick", action="store_true",
                    help="cifar10; random, evolution, rl, tpe; 12 runs each (CI)")
    nb.add_argument("--datasets", default="cifar10,cifar100,imagenet16-120",
                    help="comma-separated (default: %(default)s)")
    nb.add_argument("--strategies", default=None,
                    help="comma-separated (default: random,evolution,rl,tpe,bananas,pnas,bohb;"
                         " with --pareto: nsga2,random,tpe,evolution)")
    nb.add_argument("--seeds", type=int, default=100, help="runs per strategy (default: "
                                                           "%(default)s)")
    nb.add_argument("--workers", type=int, default=1,
                    help="simulated workers per run (default: %(default)s, as the paper)")
    nb.add_argument("--pareto", action="store_true",
                    help="instead: two objectives (val_accuracy, latency_ms), hypervolume and "
                         "the share of the true Pareto front found")
    nb.add_argument("--address", default=None, help="existing Ray cluster (ray://… or auto)")
    nb.add_argument("--output", default="bench_nb201.txt",
                    help="table (every run in FILE.json, anytime plots in *_DATASET.png; "
                         "default: %(default)s)")
    de = which.add_parser("detection", help="a detection search against a fixed baseline "
                                            "detector trained the same way (test mAP@.5)")
    de.set_defaults(func=cmd_bench_detection)
    de.add_argument("--dataset", default=None, metavar="coco:DIR",
                    help="default: raynas data synth-detection's 300 images, in a temporary "
                         "folder")
    de.add_argument("--trials", type=int, default=12, help="per search (default: %(default)s)")
    de.add_argument("--max-epochs", type=int, default=8, help="per trial (default: %(default)s)")
    de.add_argument("--retrain-epochs", type=int, default=15,
                    help="of the best and of the baseline (default: %(default)s)")
    de.add_argument("--seeds", type=int, default=1,
                    help="searches, each on its own data split (default: %(default)s)")
    de.add_argument("--strategy", default="tpe", help="default: %(default)s")
    de.add_argument("--output", default="bench_detection.json",
                    help="JSON results (the rows also in FILE.csv; default: %(default)s)")
    from raynas.bench.suite import BENCHMARKS

    for name, (text, _, _) in BENCHMARKS.items():
        bp = which.add_parser(name, help=text)
        bp.set_defaults(func=cmd_bench)
        bp.add_argument("--quick", action="store_true", help="a reduced size (CI)")
        bp.add_argument("--output", default=f"bench_{name}.json",
                        help="JSON results (the rows also in FILE.csv; default: %(default)s)")
    ba = which.add_parser("all", help=f"{', '.join(BENCHMARKS)} in turn")
    ba.set_defaults(func=cmd_bench)
    ba.add_argument("--quick", action="store_true", help="reduced sizes (CI)")
    ba.add_argument("--output", default=".",
                    help="folder for bench_NAME.json and .csv (default: the current one)")
    os_ = which.add_parser("oneshot", help="weight sharing: Kendall tau of supernet vs "
                                           "stand-alone accuracy, and the cost of each")
    os_.set_defaults(func=cmd_bench_oneshot)
    os_.add_argument("--quick", action="store_true",
                     help="6 cells, 3 epochs, a 6-epoch supernet (CI) instead of the flags")
    os_.add_argument("--archs", type=int, default=16,
                     help="NAS-Bench-201 cells sampled (default: %(default)s)")
    os_.add_argument("--epochs", type=int, default=6,
                     help="epochs of each stand-alone training (default: %(default)s)")
    os_.add_argument("--supernet-epochs", type=int, default=24,
                     help="epochs of the supernet's training (default: %(default)s)")
    os_.add_argument("--supernet", default="spos", metavar="spos|enas")
    os_.add_argument("--seed", type=int, default=0)
    os_.add_argument("--output", default="bench_oneshot.json",
                     help="results (per cell also in FILE.csv; default: %(default)s)")
    es = which.add_parser("estimators", help="cheap performance estimates against real "
                                             "training: rank correlations, cost, savings")
    es.set_defaults(func=cmd_bench_estimators)
    es.add_argument("--quick", action="store_true",
                    help="6 architectures x 4 epochs (CI) instead of --archs x --epochs")
    es.add_argument("--archs", type=int, default=24, help="architectures (default: %(default)s)")
    es.add_argument("--epochs", type=int, default=10,
                    help="epochs of the real training, >= 4 (default: %(default)s)")
    es.add_argument("--proxy", default="synflow",
                    help="the zero-cost proxy that pre-filters (default: %(default)s)")
    es.add_argument("--seed", type=int, default=0)
    es.add_argument("--output", default="bench_estimators.json",
                    help="results (per architecture also in FILE.csv; default: %(default)s)")


def cmd_tabulate(args: argparse.Namespace) -> None:
    import time
    from pathlib import Path

    from raynas.data import load_dataset
    from raynas.estimation import load_space
    from raynas.estimation.tabular import table_format, tabulate

    started, output = time.time(), Path(args.output)
    table_format(output, "--output")  # before the trainings, not after
    space, data = load_space(args.space), load_dataset(args.dataset, seed=args.seed)
    archs, seconds = tabulate(space, data, args.num_archs, args.epochs, args.seeds, output,
                              args.seed, args.cpus_per_task, args.address)
    print(f"written: {output}: {archs} architectures x {args.seeds} seeds x {args.epochs} "
          f"epochs ({seconds:.0f} s of training, {time.time() - started:.0f} s wall); search "
          f"it with: raynas search --space {args.space} --dataset tabular:{output} "
          f"--max-epochs {args.epochs}")


def cmd_bench_latency(args: argparse.Namespace) -> None:
    from pathlib import Path

    from raynas.errors import ConfigError

    if min(args.samples, args.batch, args.threads) < 1:
        raise ConfigError("raynas bench latency: --samples, --batch and --threads must be >= 1")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU on this machine")
    from raynas.bench import latency

    space, samples = ("small_cnn", 8) if args.quick else (args.space, args.samples)
    latency.run(space, args.dataset, samples, args.batch, args.device, args.threads, args.seed,
                Path(args.output))


def cmd_bench_strategies(args: argparse.Namespace) -> None:
    from pathlib import Path

    from raynas import schedulers
    from raynas.bench import strategies
    from raynas.errors import ConfigError
    from raynas.experiment.resolve import check_combination
    from raynas.strategies import STRATEGIES, get

    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    for name in names:
        check_combination(get(name), schedulers.get("fifo"), 1)
    if args.max_epochs is not None and args.max_epochs < 1:
        raise ConfigError("--max-epochs: must be >= 1")
    if args.tabular:  # on a tabular benchmark, at equal simulated time
        from raynas.bench import tabular

        if min(args.seeds, args.trials, args.concurrency) < 1:
            raise ConfigError("raynas bench strategies: every count must be >= 1")
        tabular.run(args.tabular, args.space, [n for n in names if n in STRATEGIES],
                    args.seeds, args.trials, args.max_epochs, args.concurrency,
                    args.sim_budget, Path(args.output))
        print(f"written: {args.output} (raw points: {args.output}.json)")
        return
    if args.max_epochs is None:
        args.max_epochs = 2
    if min(args.seeds, args.trials, args.max_epochs, args.concurrency, args.synthetic_budget,
           args.synthetic_seeds) < 1:
        raise ConfigError("raynas bench strategies: every count must be >= 1")
    strategies.run([n for n in names if n in STRATEGIES], args.seeds, args.trials,
                   args.max_epochs, args.concurrency, args.space, args.dataset,
                   args.synthetic_budget, args.synthetic_seeds, Path(args.output),
                   real=not args.synthetic_only)
    print(f"written: {args.output} (raw curves: {args.output}.json)")


def cmd_bench_mo_asha(args: argparse.Namespace) -> None:
    from pathlib import Path

    from raynas.errors import ConfigError

    trials, max_epochs = (8, 3) if args.quick else (args.trials, args.max_epochs)
    if min(args.seeds, trials, args.concurrency) < 1 or max_epochs < 2:
        raise ConfigError("raynas bench mo-asha: every count must be >= 1, --max-epochs >= 2 "
                          "(MO-ASHA's first rung is epoch 1)")
    from raynas.bench import mo_asha

    mo_asha.run(args.seeds, trials, max_epochs, args.concurrency, args.space, args.dataset,
                Path(args.output))


def cmd_bench_nb201(args: argparse.Namespace) -> None:
    from pathlib import Path

    from raynas.bench import nb201
    from raynas.estimation.nb201 import check_installed

    quick, names = ((nb201.PARETO_QUICK, nb201.PARETO) if args.pareto else
                    (nb201.QUICK, (*nb201.STRATEGIES, *nb201.NOT_RUN)))
    datasets, names, seeds = (
        (quick["datasets"], quick["strategies"], quick["seeds"]) if args.quick else
        (_names(args.datasets), _names(args.strategies) if args.strategies else names,
         args.seeds))
    check_installed("raynas bench nb201")
    run = nb201.run_pareto if args.pareto else nb201.run
    run(datasets, names, seeds, args.workers, Path(args.output), args.address)
    print(f"written: {args.output} (every run: {args.output}.json)")


def cmd_bench_detection(args: argparse.Namespace) -> None:
    from pathlib import Path

    from raynas.errors import ConfigError

    if min(args.trials, args.max_epochs, args.retrain_epochs, args.seeds) < 1:
        raise ConfigError("raynas bench detection: --trials, --max-epochs, --retrain-epochs and "
                          "--seeds must be >= 1")
    from raynas.bench import detection

    detection.run(args.dataset, args.trials, args.max_epochs, args.retrain_epochs, args.seeds,
                  Path(args.output), args.strategy)


def _names(text: str) -> list[str]:
    return [n.strip().lower() for n in text.split(",") if n.strip()]


def cmd_bench(args: argparse.Namespace) -> None:
    """``raynas bench overhead|throughput|asha|scaling|all``: see ``raynas.bench.suite``."""
    from pathlib import Path

    from raynas.bench import suite

    if args.bench == "all":
        suite.run_all(args.quick, Path(args.output))
    else:
        suite.run(args.bench, args.quick, Path(args.output))


def cmd_bench_oneshot(args: argparse.Namespace) -> None:
    from pathlib import Path

    from raynas.errors import ConfigError
    from raynas.strategies.weight_sharing import SAMPLERS

    archs, epochs, supernet_epochs = ((6, 3, 6) if args.quick else
                                      (args.archs, args.epochs, args.supernet_epochs))
    if archs < 3 or min(epochs, supernet_epochs) < 1:
        raise ConfigError("raynas bench oneshot: --archs must be >= 3, --epochs and "
                          "--supernet-epochs >= 1")
    if args.supernet not in SAMPLERS:
        raise ConfigError(f"--supernet: unknown sampler {args.supernet!r}; known: "
                          f"{', '.join(SAMPLERS)}")
    from raynas.bench import oneshot

    oneshot.run(archs, epochs, supernet_epochs, args.supernet, args.seed, Path(args.output))


def cmd_bench_estimators(args: argparse.Namespace) -> None:
    from pathlib import Path

    from raynas.errors import ConfigError
    from raynas.estimation.zero_cost import PROXIES

    archs, epochs = (6, 4) if args.quick else (args.archs, args.epochs)
    if archs < 3 or epochs < 4:
        raise ConfigError("raynas bench estimators: --archs must be >= 3 and --epochs >= 4")
    if args.proxy not in PROXIES:
        raise ConfigError(f"--proxy: unknown zero-cost proxy {args.proxy!r}; known: "
                          f"{', '.join(PROXIES)}")
    from raynas.bench import estimators

    estimators.run(archs, epochs, args.seed, args.proxy, Path(args.output))
