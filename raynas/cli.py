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
    s.add_argument("--max-retries", type=int, default=defaults.max_retries,
                   help="restarts of a trial whose worker dies, from its last checkpoint "
                        "(default: %(default)s)")
    s.add_argument("--max-failed-trials", type=int, default=None,
                   help="end the search once this many trials have failed (default: never)")
    s.add_argument("--tracking-wait", type=float, default=defaults.tracking_wait,
                   metavar="SECONDS",
                   help="how long the end of a search waits for an unreachable MLflow before "
                        "leaving the rest to `raynas sync` (default: %(default)s)")
    s.add_argument("--resume", default=None, metavar="FOLDER",
                   help="finish the interrupted search in FOLDER (printed when it started); "
                        "its settings come from there")
    s.add_argument("--json", action="store_true",
                   help="print a JSON summary as the last line of stdout")

    sy = commands.add_parser("sync", help="write a search's pending MLflow records (after an "
                                          "outage of the tracking server)")
    sy.set_defaults(func=cmd_sync)
    sy.add_argument("folder", metavar="FOLDER")
    sy.add_argument("--wait", type=float, default=60.0,
                    help="seconds to keep retrying an unreachable server (default: %(default)s)")

    commands.add_parser("spaces", help="list the built-in search spaces and their sizes"
                        ).set_defaults(func=cmd_spaces)

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
    st = which.add_parser("strategies", help="every strategy against random search")
    st.set_defaults(func=cmd_bench_strategies)
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
    from raynas.config import SearchConfig, validate

    names = {f.name for f in fields(SearchConfig)}
    config = SearchConfig(**{k: v for k, v in vars(args).items() if k in names})
    # Before Ray, MLflow and Tune are even imported (a resumed search validates its saved one).
    validated = None if config.resume else validate(config)
    from raynas.experiment import search

    result = search(config, validated=validated)
    best = result.best
    print(f"\nbest architecture ({best['arch_hash']}, trial {best['trial_id']}):")
    print(json.dumps(best["arch"], indent=2))
    print(f"validation accuracy (search): {best['val_accuracy']:.4f}")
    print(f"test accuracy (retrained on train+val, held-out test): {best['test_accuracy']:.4f}")
    print(f"trials: {result.num_trials} ({result.num_failed} failed), "
          f"wall time {result.wall_time_s:.0f} s")
    print(f"model: {result.model_uri}  (MLflow run {result.parent_run_id})")
    print(f"browse the results: {result.ui}")
    print(f"search folder (Tune results, --resume, raynas sync): {result.folder}")
    if args.json:
        print(json.dumps(result.to_json(), sort_keys=True), flush=True)


def cmd_sync(args: argparse.Namespace) -> None:
    from raynas.errors import TrackingError
    from raynas.experiment import sync

    if left := sync(args.folder, args.wait):
        raise TrackingError(f"MLflow still unreachable: {left} writes pending in {args.folder}")


def cmd_spaces(args: argparse.Namespace) -> None:
    from raynas.space import builtin_spaces, load_space

    for name, path in builtin_spaces().items():
        space = load_space(path)
        size = space.size()
        shown = "infinite (continuous)" if size == float("inf") else f"{size:,.0f}"
        print(f"{name:<14} {len(space.decisions()):>4} decisions  size {shown:<22} "
              f"{space.description}")


def cmd_bench_strategies(args: argparse.Namespace) -> None:
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
