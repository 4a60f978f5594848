"""``raynas bench scaling``: trials/minute on one Ray node, then on two.

A real multi-node Ray cluster on this machine: ``ray start --head`` and, for the second
measurement, ``ray start --address`` as separate processes (as ``tests/deploy/test_cluster.py``
does), each node given half the machine's cores (at least one). A driver process joins the
cluster and runs the same search both times - the Tune setup of ``raynas search``
(``common.tune_fit``), seeded random search of ``small_cnn`` on ``digits``, FIFO, one CPU per
trial, as many trials at a time as the cluster has CPUs - and the ratio is trials/minute on two
nodes over one (ideal: 2). Trials/minute counts from the first trial's start to the last one's
end, after a warm-up search that takes each node's cold start.

On one machine the second node adds cores only if the machine has them free: two 1-CPU nodes on
a 2-core machine share the cores with the driver, Ray's own processes and anything else running,
so the ratio stays below 2 there - the report prints the core count next to it. With GPUs, the
bench runs again with trials on them: each node gets half of the GPUs, or with a single GPU both
nodes are given that one device (so two nodes share it), each trial a fraction of a node's GPUs.

The driver is a separate process (``python -m raynas.bench.scaling``) because a process joins one
Ray cluster at a time: the caller may already be attached to its own local Ray.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from raynas.bench.common import Print, Report, machine, tune_fit
from raynas.data import load_dataset
from raynas.estimation import load_space
from raynas.runtime import ray_session

PORT_FLAGS = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
              "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
              "--metrics-export-port")
#: What must not leak into the cluster from the caller's environment (it may be in a Ray job).
LEAKY = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_JOB_ID", "RAY_AUTH_TOKEN")
FULL: dict[str, Any] = {"trials": 8, "max_epochs": 20}
#: No warm-up: its numbers are for sanity checks, not for reading.
QUICK: dict[str, Any] = {"trials": 4, "max_epochs": 3, "warm_up": False}


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free now: no Ray default, so another Ray on this machine is safe."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def sweep(temp: Path) -> None:
    """Kill what is left of a cluster - every process naming its temp dir (nodes, workers) -
    and remove the dir."""
    mark = str(temp).encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if mark in (entry / "cmdline").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)


@dataclass
class Cluster:
    """Ray nodes started by this process, each a ``ray start --block`` process of its own,
    with this process's environment (its token: see ``measure``)."""

    temp: Path
    address: str
    cpus: int  # per node
    gpus: int  # per node
    procs: list[subprocess.Popen]

    def add_node(self) -> None:
        ports = free_ports(len(PORT_FLAGS) + 1)
        command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block",
                   "--node-ip-address", "127.0.0.1", "--num-cpus", str(self.cpus),
                   "--num-gpus", str(self.gpus), "--object-store-memory", str(200 * 2**20),
                   "--disable-usage-stats", "--temp-dir", str(self.temp / str(len(self.procs))),
                   *(x for flag, port in zip(PORT_FLAGS, ports[:-1], strict=True)
                     for x in (flag, str(port)))]
        if self.procs:
            command += ["--address", self.address]
        else:
            command += ["--head", "--port", self.address.rpartition(":")[2],
                        "--include-dashboard", "false", "--ray-client-server-port",
                        str(ports[-1])]
        with open(self.temp / f"node{len(self.procs)}.log", "w") as log:
            self.procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True))

    def stop(self) -> None:
        """End the nodes (``ray start --block`` takes its node's processes down on SIGTERM),
        then anything left (its workers)."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        sweep(self.temp)


def wait_for_nodes(count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len([n for n in ray.nodes() if n["Alive"]]) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the cluster has not {count} nodes after {timeout:.0f} s")
        time.sleep(0.5)


def wait_for_head(address: str, timeout: float = 120) -> None:
    """Until the head's GCS answers (``ray start`` takes seconds to bring it up)."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no Ray head at {address} after {timeout:.0f} s") from None
            time.sleep(0.5)


def search_rate(trials: int, max_epochs: int, concurrency: int, gpus_per_trial: float
                ) -> dict[str, Any]:
    """One search on the cluster this process has joined: its trials/minute, from the first
    trial's start to the last one's end, and how many trials each node ran."""
    starts: list[float] = []
    ends: list[float] = []
    node_of: dict[str, str] = {}  # trial id -> the node its results came from

    class Clock(tune.Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any):
            starts.append(time.perf_counter())

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any):
            node_of[trial.trial_id] = result["node_id"]

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any):
            ends.append(time.perf_counter())

    grid = tune_fit(load_space("small_cnn"), load_dataset("digits", seed=0), strategy="random",
                    scheduler="fifo", seed=0, trials=trials, max_epochs=max_epochs,
                    concurrency=concurrency, callbacks=[Clock()], gpus=gpus_per_trial)
    if grid.num_errors:
        raise RuntimeError(f"{grid.num_errors} trials failed: {grid.errors[0]}")
    seconds = max(ends) - min(starts)
    return {"seconds": round(seconds, 2), "trials_per_min": round(60 * len(ends) / seconds, 2),
            "trials_per_node": sorted(Counter(node_of.values()).values(), reverse=True)}


def one_then_two(settings: dict[str, Any]) -> list[dict[str, Any]]:
    """In the driver process: start a head node, measure; add a second node, measure again."""
    cpus = settings["cpus"]
    (port,) = free_ports(1)
    nodes = Cluster(Path(settings["temp"]), f"127.0.0.1:{port}", cpus, settings["gpus"], [])
    try:
        nodes.add_node()
        wait_for_head(nodes.address)
        with ray_session(nodes.address, logging_level="ERROR"):
            found = []
            for count in (1, 2):
                if count == 2:
                    nodes.add_node()
                wait_for_nodes(count)
                # A node's first trial pays its cold start (a worker process importing torch
                # and raynas: seconds, as long as many short trials): a one-epoch warm-up with
                # a trial per CPU takes it, so what is measured is the rate of a running search.
                if settings["warm_up"]:
                    search_rate(count * cpus, 1, count * cpus, settings["gpus_per_trial"])
                found.append({"nodes": count, "cpus": count * cpus, **search_rate(
                    settings["trials"], settings["max_epochs"], count * cpus,
                    settings["gpus_per_trial"])})
            return found
    finally:
        nodes.stop()


def measure(settings: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    """``one_then_two`` in a driver process of its own (this one may be attached to another
    Ray already); its JSON result. Nodes and driver share a token of their own: Ray 2.60
    authenticates by default when a token exists (e.g. ``~/.ray/auth_token``), and which one
    must not depend on that."""
    # Short: Ray's Unix socket paths under it must fit in 107 bytes.
    temp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))
    (temp / "auth_token").write_text(os.urandom(32).hex())
    env = {**{k: v for k, v in os.environ.items() if k not in LEAKY},
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(temp / "auth_token")}
    try:
        proc = subprocess.run([sys.executable, "-m", "raynas.bench.scaling",
                               json.dumps({**settings, "temp": str(temp)})], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"scaling driver: no result within {timeout:.0f} s") from None
    finally:
        sweep(temp)  # after a driver that died or timed out
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"scaling driver failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def run(trials: int, max_epochs: int, output: Path, warm_up: bool = True,
        print_fn: Print = print, timeout: float = 600) -> Report:
    host = machine()
    cores = host["cores"] or 1
    cpus = max(1, cores // 2)
    devices = torch.cuda.device_count()
    kinds = [("cpu", 0, 0.0)]
    if devices:  # a node's GPU share, and each trial's fraction of it
        per_node = max(1, devices // 2)
        kinds.append(("gpu", per_node, per_node / cpus))
    print_fn(f"scaling: small_cnn on digits, {trials} trials x {max_epochs} epochs, random "
             f"search, FIFO; nodes of {cpus} CPU(s) each on a {cores}-core machine, "
             f"{devices} GPU(s)")
    if 2 * cpus + 1 > cores:
        print_fn(f"note: two {cpus}-CPU nodes plus the driver need more than this machine's "
                 f"{cores} cores: the second node cannot double the rate here")
    rows: list[dict[str, Any]] = []
    for kind, gpus, per_trial in kinds:
        settings = {"trials": trials, "max_epochs": max_epochs, "cpus": cpus, "gpus": gpus,
                    "gpus_per_trial": per_trial, "warm_up": warm_up}
        for found in measure(settings, timeout):
            rows.append({"kind": kind, "gpus_per_node": gpus, "trials": trials, **found})
            print_fn(f"{kind}: {found['nodes']} node(s), {found['cpus']} CPU(s): "
                     f"{found['trials_per_min']:.1f} trials/min ({trials} trials in "
                     f"{found['seconds']:.1f} s; trials per node {found['trials_per_node']})")
    rate = {(r["kind"], r["nodes"]): r["trials_per_min"] for r in rows}
    summary = {f"{kind}_speedup": round(rate[kind, 2] / rate[kind, 1], 3) for kind, *_ in kinds}
    report = Report("scaling", rate["cpu", 2] / rate["cpu", 1],
                    f"ratio = trials/min on 2 Ray nodes / on 1 (higher is better, ideal 2; "
                    f"{cpus} CPU(s) per node, {cores} cores here)", "close to 2 where the "
                    "cores exist", rows, host, summary,
                    {"trials": trials, "max_epochs": max_epochs, "cpus_per_node": cpus,
                     "space": "small_cnn", "dataset": "digits", "warm_up": warm_up})
    report.write(output, print_fn)
    return report


def main(args: argparse.Namespace) -> None:
    """``raynas bench scaling [--quick]``: ``run`` at its full or its CI size."""
    run(**(QUICK if args.quick else FULL), output=Path(args.output))


if __name__ == "__main__":
    print(json.dumps(one_then_two(json.loads(sys.argv[1]))), flush=True)
