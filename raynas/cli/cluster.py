"""``raynas launch cluster|k8s``, ``status`` and ``stop``: a search on a Ray cluster (Ray Jobs)
or on Kubernetes (KubeRay)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from raynas.cli.common import Parser, fraction


def add(commands: Any) -> None:
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
    lk.add_argument("--cpus", type=fraction, default=None, help="CPUs per worker")
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



def _search_flags(args: argparse.Namespace) -> list[str]:
    """The search flags after ``--``, checked here by the ``search`` parser (a typo fails now,
    not minutes later on the cluster)."""
    from raynas.errors import ConfigError

    flags = list(args.search_flags)
    if flags[:1] == ["--"]:
        flags = flags[1:]
    from raynas.cli.search import add_search_flags

    search = Parser(prog="raynas search")
    add_search_flags(search)
    if search.parse_args(flags).address is not None:
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

    from raynas.deploy import launcher
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

    from raynas.deploy import kube, launcher

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
    from raynas.deploy import launcher

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
    from raynas.deploy import launcher

    final = launcher.stop(_cluster_address(args), args.job_id, 0 if args.no_wait else 60)
    print(f"{args.job_id}: {final}")
