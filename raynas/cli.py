"""The ``raynas`` command: ``search`` and ``spaces``.

User errors print one line, ``raynas: error: <what>``, on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from dataclasses import fields

from raynas.errors import RaynasError, SearchInterrupted

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


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
    s.set_defaults(func=cmd_search)
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
    s.add_argument("--max-retries", type=int, default=defaults.max_retries,
                   help="restarts of a trial whose worker dies, from its last checkpoint "
                        "(default: %(default)s)")
    s.add_argument("--max-failed-trials", type=int, default=None,
                   help="end the search once this many trials have failed (default: never)")
    s.add_argument("--tracking-wait", type=float, default=defaults.tracking_wait,
                   metavar="SECONDS",
                   help="how long the end of a search waits for an unreachable MLflow before "
                        "leaving the rest to `raynas sync` (default: %(default)s)")
    s.add_argument("--resume", default=None, metavar="FOLDER|auto",
                   help="finish the interrupted search in FOLDER (printed when it started); "
                        "its settings come from there. auto: the search lives in "
                        "STORAGE/EXPERIMENT; resume it if it is there, else start it there "
                        "(a job that restarts runs the same command)")
    s.add_argument("--json", action="store_true",
                   help="print a JSON summary as the last line of stdout")

    ex = commands.add_parser("extend", help="give a finished search more trials (same strategy "
                                             "state, same MLflow parent run)")
    ex.set_defaults(func=cmd_extend)
    ex.add_argument("target", metavar="FOLDER|EXPERIMENT",
                    help="a search folder, or an MLflow experiment (its latest search)")
    ex.add_argument("--num-trials", type=int, required=True, help="trials to add")
    ex.add_argument("--tracking-uri", default=None,
                    help="where to look up EXPERIMENT (default: $MLFLOW_TRACKING_URI or "
                         "./mlflow.db)")
    ex.add_argument("--json", action="store_true",
                    help="print a JSON summary as the last line of stdout")

    sy = commands.add_parser("sync", help="write a search's pending MLflow records (after an "
                                          "outage of the tracking server)")
    sy.set_defaults(func=cmd_sync)
    sy.add_argument("folder", metavar="FOLDER")
    sy.add_argument("--wait", type=float, default=60.0,
                    help="seconds to keep retrying an unreachable server (default: %(default)s)")

    rt = commands.add_parser("retrain", help="retrain a search's best architectures with several "
                                             "seeds; test, log, register, crown a champion")
    rt.set_defaults(func=cmd_retrain)
    rt.add_argument("target", metavar="RUN_ID|ARCH.json",
                    help="a search's MLflow (parent) run id, or an architecture JSON file")
    rt.add_argument("--epochs", type=int, required=True,
                    help="epochs of each training on train+val")
    rt.add_argument("--top-k", type=int, default=1,
                    help="the K best architectures of the search by validation accuracy "
                         "(default: %(default)s)")
    rt.add_argument("--seeds", type=int, default=3,
                    help="trainings per architecture, seeds SEED..SEED+S-1 (default: %(default)s)")
    rt.add_argument("--seed", type=int, default=None,
                    help="data split and first training seed (default: the search's; a file: 0)")
    rt.add_argument("--dataset", default=None,
                    help="default: the search's; for a file: digits")
    rt.add_argument("--space", default=None,
                    help="an architecture file's space (default: the one the file names)")
    rt.add_argument("--experiment", default=None,
                    help="MLflow experiment and registered model (default: the search's; for a "
                         "file: the space's name)")
    rt.add_argument("--tracking-uri", default=None,
                    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
    rt.add_argument("--json", action="store_true",
                    help="print a JSON summary as the last line of stdout")

    xp = commands.add_parser("export", help="export an MLflow model to TorchScript or ONNX, "
                                            "checked against PyTorch")
    xp.set_defaults(func=cmd_export)
    xp.add_argument("model_uri", metavar="MODEL_URI",
                    help="models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH")
    xp.add_argument("--format", required=True, choices=("torchscript", "onnx"))
    xp.add_argument("--output", default="export", metavar="DIR",
                    help="folder for model.pt / model.onnx (default: %(default)s)")
    xp.add_argument("--tracking-uri", default=None,
                    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")

    rp = commands.add_parser("report", help="(re)build a search's report (report.html, plots, "
                                            "diagrams) from MLflow and log it to its run")
    rp.set_defaults(func=cmd_report)
    rp.add_argument("run_id", metavar="RUN_ID", help="the search's MLflow (parent) run id")
    rp.add_argument("--tracking-uri", default=None,
                    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
    cp = commands.add_parser("compare", help="what changed between two trials' architectures, "
                                             "and their parameters and FLOPs")
    cp.set_defaults(func=cmd_compare)
    cp.add_argument("run_ids", metavar="RUN_ID", nargs=2, help="two trial runs: A, then B")
    cp.add_argument("--tracking-uri", default=None,
                    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")

    pa = commands.add_parser("pareto", help="print the Pareto front of a multi-objective search")
    pa.set_defaults(func=cmd_pareto)
    pa.add_argument("run_id", metavar="RUN_ID", help="the search's (parent) MLflow run")
    pa.add_argument("--tracking-uri", default=None,
                    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")

    commands.add_parser("spaces", help="list the built-in search spaces and their sizes"
                        ).set_defaults(func=cmd_spaces)

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
    tb.add_argument("--cpus-per-task", type=_fraction, default=1.0)
    tb.add_argument("--address", default=None, help="existing Ray cluster (ray://… or auto)")
    tb.add_argument("--output", default="table.csv",
                    help=".csv, .json, .jsonl or .parquet (default: %(default)s)")

    # `raynas launch cluster|k8s [launcher flags] -- [search flags]`: the job runs
    # `raynas search --address auto [search flags]`.
    launch = commands.add_parser("launch", help="run a search on a Ray cluster or on Kubernetes")
    launch.set_defaults(func=cmd_launch)
    where = launch.add_subparsers(dest="launch", parser_class=Parser, required=True)
    lc = where.add_parser("cluster", help="submit to an existing Ray cluster (Ray Jobs API)",
                          usage="raynas launch cluster --address http://HEAD:8265 [options] "
                                "-- [search flags]")
    lc.add_argument("--address", default=None,
                    help="the cluster's dashboard, http://HEAD:8265 "
                         "(default: $RAY_API_SERVER_ADDRESS)")
    lc.add_argument("--no-wait", action="store_true",
                    help="print the job id and return instead of following its logs")
    lc.add_argument("--tracking-uri", default=None,
                    help="MLflow server for the job, as MLFLOW_TRACKING_URI (default: "
                         "$MLFLOW_TRACKING_URI when it is http(s)://)")
    lc.add_argument("--storage", default=None,
                    help="Tune results for the job, as RAYNAS_STORAGE: a path every node "
                         "shares, or a URI")
    lc.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="an environment variable for the job, repeatable")
    lc.add_argument("--working-dir", default=".",
                    help="the folder shipped to the cluster; the job starts in it "
                         "(default: the current one)")
    lc.add_argument("--pip", action="append", default=None, metavar="REQUIREMENT",
                    help="extra pip requirement for the job, repeatable (the cluster must "
                         "reach a package index); by default the cluster's packages are used")
    lc.add_argument("search_flags", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    lk = where.add_parser("k8s", help="render (or --apply) the KubeRay manifests for a search",
                          usage="raynas launch k8s [options] [--dry-run | --apply] "
                                "-- [search flags]")
    lk.add_argument("--overlay", default="cpu",
                    help="cpu | gpu | a kustomization directory (default: %(default)s)")
    lk.add_argument("--image", default=None, help="the raynas image for every Ray container")
    lk.add_argument("--namespace", default=None, help="default: raynas")
    lk.add_argument("--workers", type=int, default=None, help="replicas of each worker group")
    lk.add_argument("--cpus", type=_fraction, default=None, help="CPUs per worker")
    lk.add_argument("--gpus", type=int, default=None, help="GPUs per GPU worker (overlay gpu)")
    lk.add_argument("--memory", default=None, help="memory per worker, e.g. 8Gi")
    mode = lk.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="print the validated manifests (the default)")
    mode.add_argument("--apply", action="store_true", help="pipe them to `kubectl apply -f -`")
    lk.add_argument("search_flags", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    for name, text in (("status", "a submitted job's status"), ("stop", "stop a submitted job")):
        job = commands.add_parser(name, help=text)
        job.set_defaults(func=cmd_status if name == "status" else cmd_stop)
        job.add_argument("job_id", metavar="JOB_ID")
        job.add_argument("--address", default=None,
                         help="the cluster's dashboard, http://HEAD:8265 "
                              "(default: $RAY_API_SERVER_ADDRESS)")
        if name == "stop":
            job.add_argument("--no-wait", action="store_true",
                             help="return without waiting for the job to end")

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
    return parser


def cmd_search(args: argparse.Namespace) -> None:
    from raynas.config import SearchConfig, validate

    names = {f.name for f in fields(SearchConfig)}
    config = SearchConfig(**{k: v for k, v in vars(args).items() if k in names})
    # Before Ray, MLflow and Tune are even imported (a resumed search validates its saved one).
    validated = None if config.resume not in (None, "auto") else validate(config)
    from raynas.experiment import search

    _summary(search(config, validated=validated), args.json)


def cmd_extend(args: argparse.Namespace) -> None:
    from raynas.experiment import extend

    _summary(extend(args.target, args.num_trials, args.tracking_uri), args.json)


def _summary(result, as_json: bool) -> None:
    best = result.best
    print(f"\nbest architecture ({best['arch_hash']}, trial {best['trial_id']}):")
    print(json.dumps(best["arch"], indent=2))
    print(f"validation accuracy (search): {best['val_accuracy']:.4f}")
    if "sim_time_s" in best:  # a tabular search: nothing was trained
        print(f"test accuracy (the table's, no retraining): {best['test_accuracy']:.4f}; "
              f"simulated training time of the search: {best['sim_time_s']:.0f} s")
    else:
        print(f"test accuracy (retrained on train+val, held-out test): "
              f"{best['test_accuracy']:.4f}")
    print(f"trials: {result.num_trials} ({result.num_failed} failed), "
          f"wall time {result.wall_time_s:.0f} s")
    print(f"model: {result.model_uri}  (MLflow run {result.parent_run_id})")
    print(f"browse the results: {result.ui}")
    print(f"search folder (Tune results, --resume, raynas sync): {result.folder}")
    if as_json:
        print(json.dumps(result.to_json(), sort_keys=True), flush=True)


def cmd_sync(args: argparse.Namespace) -> None:
    from raynas.errors import TrackingError
    from raynas.experiment import sync

    if left := sync(args.folder, args.wait):
        raise TrackingError(f"MLflow still unreachable: {left} writes pending in {args.folder}")


def cmd_retrain(args: argparse.Namespace) -> None:
    from raynas.retrain import retrain_best

    result = retrain_best(args.target, args.epochs, args.top_k, args.seeds,
                          dataset=args.dataset, space=args.space, seed=args.seed,
                          tracking=args.tracking_uri, experiment=args.experiment)
    print(result.table())
    if args.json:
        print(json.dumps(result.to_json(), sort_keys=True), flush=True)


def cmd_export(args: argparse.Namespace) -> None:
    from raynas.export import export_model

    done = export_model(args.model_uri, args.format, args.output, args.tracking_uri)
    print(f"{done.format}: {done.path}")
    print(f"checked against the PyTorch model on batches of {done.batch_sizes} (the logged "
          f"input example, then random): max abs diff {done.max_abs_diff:.3g} "
          f"(tolerance {done.tolerance:.3g})")
    print(f"logged: {done.artifact} (metric export_{done.format}_max_abs_diff)")


def cmd_report(args: argparse.Namespace) -> None:
    from raynas.report.search import log_report
    from raynas.tracking import connect, tracking_uri

    client = connect(tracking_uri(args.tracking_uri))
    files = log_report(client, args.run_id)
    print(f"logged to run {args.run_id}: {', '.join(files)}")
    print(f"open: {client.get_run(args.run_id).info.artifact_uri}/report.html")


def cmd_compare(args: argparse.Namespace) -> None:
    from raynas.report.compare import compare
    from raynas.tracking import connect, tracking_uri

    print(compare(connect(tracking_uri(args.tracking_uri)), *args.run_ids))


def cmd_pareto(args: argparse.Namespace) -> None:
    from raynas.strategies.pareto import front_table, load_front

    print(front_table(load_front(args.run_id, args.tracking_uri)))


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


def cmd_spaces(args: argparse.Namespace) -> None:
    from raynas.space import builtin_spaces, load_space

    for name, path in builtin_spaces().items():
        space = load_space(path)
        size = space.size()
        shown = "infinite (continuous)" if size == float("inf") else f"{size:,.0f}"
        print(f"{name:<14} {len(space.decisions()):>4} decisions  size {shown:<22} "
              f"{space.description}")


def cmd_tabulate(args: argparse.Namespace) -> None:
    import time
    from pathlib import Path

    from raynas.data import load_dataset
    from raynas.estimation.tabular import table_format, tabulate
    from raynas.space import load_space

    started, output = time.time(), Path(args.output)
    table_format(output, "--output")  # before the trainings, not after
    space, data = load_space(args.space), load_dataset(args.dataset, seed=args.seed)
    archs, seconds = tabulate(space, data, args.num_archs, args.epochs, args.seeds, output,
                              args.seed, args.cpus_per_task, args.address)
    print(f"written: {output}: {archs} architectures x {args.seeds} seeds x {args.epochs} "
          f"epochs ({seconds:.0f} s of training, {time.time() - started:.0f} s wall); search "
          f"it with: raynas search --space {args.space} --dataset tabular:{output} "
          f"--max-epochs {args.epochs}")


def cmd_bench_strategies(args: argparse.Namespace) -> None:
    from pathlib import Path

    from raynas.bench import strategies
    from raynas.errors import ConfigError
    from raynas.strategies import STRATEGIES, check_names

    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    for name in names:
        check_names(name, "fifo")
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


def _search_flags(args: argparse.Namespace) -> list[str]:
    """The search flags after ``--``, checked here by the ``search`` parser (a typo fails now,
    not minutes later on the cluster)."""
    from raynas.errors import ConfigError

    flags = list(args.search_flags)
    if flags[:1] == ["--"]:
        flags = flags[1:]
    if build_parser().parse_args(["search", *flags]).address is not None:
        raise ConfigError("--address in the search flags: the job joins the cluster it runs on "
                          "(--address auto); give the cluster to the launcher instead")
    return flags


def _cluster_address(args: argparse.Namespace) -> str:
    import os

    from raynas.errors import ConfigError

    address = args.address or os.environ.get("RAY_API_SERVER_ADDRESS")
    if not address:
        raise ConfigError("--address: required, the cluster's dashboard, e.g. http://HEAD:8265")
    return address


def cmd_launch(args: argparse.Namespace) -> None:
    import os

    from raynas import launcher
    from raynas.errors import ConfigError

    flags = _search_flags(args)
    if args.launch == "k8s":
        _launch_k8s(args, flags)
        return
    address = _cluster_address(args)
    env: dict[str, str] = {}
    tracking = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if args.tracking_uri or tracking.startswith(("http://", "https://")):
        env["MLFLOW_TRACKING_URI"] = tracking
    if args.storage:
        env["RAYNAS_STORAGE"] = args.storage
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--env: expected KEY=VALUE, got {item!r}")
        env[key] = value
    job_id = launcher.submit(address, flags, working_dir=args.working_dir, env=env,
                             pip=args.pip).job_id
    print(f"raynas: submitted job {job_id} to {address}", file=sys.stderr, flush=True)
    if "MLFLOW_TRACKING_URI" not in env and not any(
            f.split("=")[0] == "--tracking-uri" for f in flags):
        print("raynas: note: no --tracking-uri: the job uses the cluster's $MLFLOW_TRACKING_URI, "
              "else an mlflow.db in its (temporary) working directory", file=sys.stderr)
    if args.no_wait:
        print(job_id)
        print(f"raynas: raynas status {job_id} --address {address}  |  "
              f"raynas stop {job_id} --address {address}", file=sys.stderr)
        return
    try:
        final = launcher.follow_logs(address, job_id)
    except KeyboardInterrupt:
        print(f"raynas: stopped following; job {job_id} keeps running "
              f"(raynas stop {job_id} --address {address})", file=sys.stderr)
        raise
    print(f"raynas: job {job_id} {final}", file=sys.stderr)
    if final != "SUCCEEDED":
        raise SystemExit(1)


def _launch_k8s(args: argparse.Namespace, flags: list[str]) -> None:
    import shutil
    import subprocess

    from raynas import kube, launcher

    objs = kube.render(args.overlay, image=args.image, namespace=args.namespace,
                       workers=args.workers, cpus=args.cpus, gpus=args.gpus, memory=args.memory,
                       entrypoint=launcher.entrypoint(flags) if flags else None)
    for obj in objs:
        kube.validate(obj)
    text = kube.to_yaml(objs)
    if not args.apply:
        print(text, end="")
        return
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise kube.KubeError("kubectl not found on PATH (needed by --apply)")
    try:
        proc = subprocess.run([kubectl, "apply", "-f", "-"], input=text, capture_output=True,
                              text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise launcher.LaunchError("kubectl apply: no answer within 300 s") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()] or ["no output"]
        raise launcher.LaunchError(f"kubectl apply failed: {lines[-1].strip()}")
    print(proc.stdout, end="")


def cmd_status(args: argparse.Namespace) -> None:
    from raynas import launcher

    info = launcher.status(_cluster_address(args), args.job_id)
    print(f"{args.job_id}: {launcher.state_name(info.status)}")
    print(f"entrypoint: {info.entrypoint}")
    if info.message:
        print(f"message: {info.message}")
    pins = {k.removesuffix("_version"): v for k, v in (info.metadata or {}).items()
            if k.endswith("_version")}
    if pins:
        print("submitted with: " + ", ".join(f"{k} {v}" for k, v in pins.items()))


def cmd_stop(args: argparse.Namespace) -> None:
    from raynas import launcher

    final = launcher.stop(_cluster_address(args), args.job_id, 0 if args.no_wait else 60)
    print(f"{args.job_id}: {final}")


def _check_pins(args: argparse.Namespace) -> None:
    """In a job from ``raynas launch cluster``: every node must run the submitter's versions."""
    import os

    from raynas.launcher import PIN_ENV

    if args.command == "search" and os.environ.get(PIN_ENV):
        from raynas.launcher import check_pins

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


if __name__ == "__main__":
    sys.exit(main())
