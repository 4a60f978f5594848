"""The cluster launcher on a real two-node Ray cluster, with a real MLflow tracking server.

`ray start --head` and `ray start --address` run as separate processes on this machine, one CPU
each plus a resource naming the node (node_a, node_b), token authentication on (Ray 2.60's default
for a new cluster) with a token of the test's own. They never meet the session's in-process Ray
(`ray_local`): `ray.init()` without an address joins an existing cluster only when RAY_ADDRESS or
/tmp/ray/ray_current_cluster names one, and these nodes write that file under their own temp dirs,
listen on ports picked free (none of Ray's defaults), and RAY_ADDRESS exists only inside their
jobs. Teardown stops the processes this module started, by id.

The search submitted is exactly the Kubernetes RayJob's entrypoint
(raynas.deploy.kube.DEFAULT_ENTRYPOINT): the MLflow server and the results folder reach it as
environment variables, as on Kubernetes. The nodes reach an S3 server (moto's, the ``s3`` fixture)
as they would a bucket: AWS_ENDPOINT_URL and credentials in their environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from servers import start_mlflow, stop

from raynas.bench.scaling import free_ports
from raynas.deploy import kube, launcher

REPO = Path(__file__).resolve().parents[2]
BIN = str(Path(sys.executable).parent)  # ray, mlflow and raynas live next to this Python
# What must not leak from the test session into the cluster, the server or the submitter.
LEAKY = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN",
         "RAY_AUTH_TOKEN_PATH", "MLFLOW_TRACKING_URI", "RAYNAS_STORAGE", "KUBECONFIG")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LEAKY}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


def raynas(*args: str, cwd: Path, env: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raynas.cli", *args], cwd=cwd,
                          env=env or clean_env(), capture_output=True, text=True,
                          timeout=timeout)


def wait_for(what: str, ready, timeout: float, alive=None) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if alive is not None and not alive():
            pytest.fail(f"{what}: the process died")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(0.5)


def spawn(command: list[str], log: Path, env: dict[str, str], **kwargs) -> subprocess.Popen:
    """Start a server process in a session of its own, its output in ``log``."""
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, **kwargs)


def end(proc: subprocess.Popen, grace: float = 30) -> None:
    """Stop a process this module started (SIGTERM, then SIGKILL)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ------------------------------------------------------------------------------------ fixtures


@dataclass
class Cluster:
    address: str  # the head's dashboard: the Ray Jobs API
    gcs: str  # the head's GCS, HOST:PORT: what `raynas search --address` joins
    temp: Path  # the nodes' temp dirs (a/, b/): sessions, logs, the jobs' unpacked packages
    token: str
    nodes: dict[str, str]  # node_a / node_b -> Ray node id
    submitter_env: dict[str, str]  # a user's shell: the cluster's token file, nothing else
    worker: subprocess.Popen  # node_b's `ray start --block`: ending it removes the node

    def client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address,
                                   headers={"authorization": f"Bearer {self.token}"})


@pytest.fixture(scope="module")
def cluster(s3) -> Iterator[Cluster]:
    if (error := _dashboard_missing()) is not None:
        pytest.fail(f"the Ray Jobs API needs the dashboard: pip install 'ray[default]' ({error})")
    # One temp dir per node, as on separate machines: two nodes sharing one would share the
    # runtime_resources folder, and one node's cleanup would delete the other's unpacked working
    # dir under its running job. Short: Ray's Unix socket paths under it must fit in 107 bytes.
    temp = Path(tempfile.mkdtemp(prefix="rn", dir="/tmp"))
    token_file = temp / "auth_token"
    token_file.write_text(os.urandom(32).hex())
    env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file),
                    RAY_USAGE_STATS_ENABLED="0", **s3.env)
    (gcs, dashboard, client_port, *ports) = free_ports(15)
    ray = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block",
           "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0",
           "--object-store-memory", str(200 * 2**20), "--disable-usage-stats"]

    def node_ports(p: list[int]) -> list[str]:
        names = ["--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                 "--runtime-env-agent-port", "--metrics-export-port", "--node-manager-port",
                 "--object-manager-port"]
        return [x for name, port in zip(names, p, strict=True) for x in (name, str(port))]

    procs: list[subprocess.Popen] = []
    try:
        procs.append(spawn(
            [*ray, "--head", "--port", str(gcs), "--include-dashboard", "true",
             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
             "--ray-client-server-port", str(client_port), "--resources", '{"node_a": 1}',
             "--temp-dir", str(temp / "a"), *node_ports(ports[:6])], temp / "head.log", env))
        wait_for("Ray head (GCS)", lambda: _listening(gcs), 90,
                 alive=lambda: procs[0].poll() is None)
        procs.append(spawn(
            [*ray, "--address", f"127.0.0.1:{gcs}", "--resources", '{"node_b": 1}',
             "--temp-dir", str(temp / "b"), *node_ports(ports[6:12])], temp / "worker.log",
            env))
        address = f"http://127.0.0.1:{dashboard}"
        nodes: dict[str, str] = {}

        def both_nodes() -> bool:
            nodes.update(_alive_nodes(address, token_file.read_text()))
            return len(nodes) == 2

        wait_for("two Ray nodes", both_nodes, 120,
                 alive=lambda: all(p.poll() is None for p in procs))
        yield Cluster(address, f"127.0.0.1:{gcs}", temp, token_file.read_text(), nodes,
                      clean_env(RAY_AUTH_TOKEN_PATH=str(token_file), **s3.env), procs[1])
    finally:
        _stop_jobs(f"http://127.0.0.1:{dashboard}", token_file.read_text())
        for proc in reversed(procs):  # `ray start --block` takes its node's processes down
            end(proc)
        _kill_leftovers(temp)
        shutil.rmtree(temp, ignore_errors=True)


@dataclass
class Server:
    url: str
    root: Path  # holds the SQLite store and the artifact destination


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> Iterator[Server]:
    """`mlflow server` with a SQLite backend and proxied artifacts, and the Host-header rules
    of the Kubernetes manifest (k8s/base/mlflow.yaml)."""
    root = tmp_path_factory.mktemp("mlflow")
    (port,) = free_ports(1)
    env = clean_env(MLFLOW_SERVER_ALLOWED_HOSTS=_manifest_allowed_hosts())
    server = start_mlflow(port, f"sqlite:///{root / 'mlflow.db'}", root / "server.log",
                          artifacts=root / "artifacts", env=env)
    try:
        yield Server(f"http://127.0.0.1:{port}", root)
    finally:
        stop(server)


# Tune's restore of a trial whose last checkpoint the killed driver's state names but the bucket
# does not hold (seen on 2 of 2 CI runs on 2026-12-07, and 2 of 3 runs beside a CPU hog): the
# trial fails and the search goes on. A known limitation (docs/fault-tolerance.md), not hidden:
# only this error is let through, and the search must still finish with every count exact.
UNFINISHED_UPLOAD = "Could not recover from checkpoint as it does not exist on storage anymore"

# --------------------------------------------------------------------------------------- tests


def test_the_kubernetes_entrypoint_resumes_itself_on_two_nodes_into_the_mlflow_server(
        cluster, mlflow_server, s3, tmp_path):
    """The RayJob's command with its storage in a bucket, its driver killed mid-search (a lost
    head pod) and its local disk gone, then the very same command again (KubeRay's retry on a
    new cluster): it finds the search in the bucket and finishes it, every trial once, one final
    model."""
    import mlflow
    import torch
    from mlflow.models import Model
    from mlflow.tracking import MlflowClient

    work, ledgers = tmp_path / "work", tmp_path / "ledgers"  # the driver's disk: see below
    work.mkdir()
    command = shlex.split(kube.DEFAULT_ENTRYPOINT)
    assert command[:4] == ["raynas", "search", "--address", "auto"]
    assert command[command.index("--resume") + 1] == "auto"
    launch = ["launch", "cluster", "--address", cluster.address, "--tracking-uri",
              mlflow_server.url, "--storage", f"s3://{s3.bucket}/results",
              "--env", f"RAYNAS_LEDGERS={ledgers}"]
    first = raynas(*launch, "--no-wait", "--", *command[4:], cwd=work, env=cluster.submitter_env)
    assert first.returncode == 0, first.stderr
    # --resume auto: STORAGE/EXPERIMENT, the search's own folder mirrored in raynas/ there
    ledger = "results/k8s-demo/raynas/mlflow-ledger.jsonl"

    def two_trials_ended() -> bool:
        ops = [json.loads(line) for line in (s3.read(ledger) or b"").decode().splitlines()
               if line.endswith("}")]
        return sum(op["op"] == "end" and op["key"].startswith("trial/") for op in ops) >= 2

    wait_for("two trials of the first job", two_trials_ended, 300)
    drivers = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/cmdline") if p.exists()
               and b"search\x00--address\x00auto" in p.read_bytes()]
    assert len(drivers) == 1, drivers
    os.kill(drivers[0], signal.SIGKILL)
    wait_for("the first job to fail", lambda: launcher.state_name(
        cluster.client().get_job_status(first.stdout.strip())) == "FAILED", 60)
    # The new driver has an empty disk (a new head pod): all it finds is in the bucket.
    (local,) = ledgers.glob("*/k8s-demo")
    assert (local / "mlflow-ledger.jsonl").is_file()
    shutil.rmtree(ledgers)

    proc = raynas(*launch, "--", *command[4:], cwd=work, env=cluster.submitter_env, timeout=420)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    job_id = re.search(r"submitted job (\S+)", proc.stderr).group(1)
    assert proc.stderr.strip().endswith(f"job {job_id} SUCCEEDED")
    assert "--resume auto: " in proc.stdout and "resuming it" in proc.stdout, proc.stdout[-3000:]

    # Both jobs ran exactly the RayJob's command, pinned to this machine's versions.
    info = cluster.client().get_job_info(job_id)
    assert info.entrypoint == cluster.client().get_job_info(first.stdout.strip()).entrypoint
    assert info.entrypoint == kube.DEFAULT_ENTRYPOINT
    assert info.metadata == {f"{k}_version": v for k, v in launcher.local_versions().items()}
    pinned = re.search(r"versions match the submitter's on 2 node\(s\): .*; raynas from (\S+)",
                       proc.stdout)
    assert pinned, proc.stdout[-3000:]
    shipped = Path(pinned.group(1))  # the py_modules copy of this raynas, not the installed one
    assert shipped.is_relative_to(cluster.temp) and not shipped.is_relative_to(REPO)

    # The job's log is followed to the end: its last stdout line is the search's --json summary.
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["tracking_uri"] == mlflow_server.url
    assert summary["num_trials"] == int(command[command.index("--num-trials") + 1])

    # A separate client reads everything back from the server.
    client = MlflowClient(mlflow_server.url)
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED"
    trials = client.search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.`raynas.role` = 'trial'",
        max_results=1000)
    assert len(trials) == summary["num_trials"], proc.stdout[-3000:]
    # Exactly once: one search run, each trial one run with one point per budget step.
    searches = client.search_runs([parent.info.experiment_id], "tags.`raynas.role` = 'search'")
    assert [r.info.run_id for r in searches] == [parent.info.run_id]
    assert len({r.data.tags["raynas.trial_id"] for r in trials}) == len(trials)
    for run in trials:
        if run.info.status == "FAILED" and UNFINISHED_UPLOAD in run.data.tags["raynas.error"]:
            continue  # the driver died while Tune uploaded this trial's checkpoint: see below
        assert run.info.status in ("FINISHED", "KILLED"), (
            run.data.tags.get("raynas.error"), proc.stdout[-3000:])
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert steps == sorted(set(steps)) and steps[0] == 1, steps
    # Trials ran on the cluster's nodes. Not necessarily on both: with actor reuse, a node
    # whose trial actor starts slower than a trial runs gets none (docs/cluster.md); the
    # node-loss test below puts a trial on node_b for certain.
    on = [r.data.tags.get("raynas.node_id") for r in trials]
    assert set(on) <= set(cluster.nodes.values()), proc.stdout[-3000:]

    # The final model: registered once, stored by the server, loadable through it.
    name = summary["experiment"]
    (version,) = client.search_model_versions(f"name = '{name}'")
    assert summary["model_uri"] == f"models:/{name}/{version.version}"
    source = client.get_model_version_download_uri(name, version.version)
    assert source.startswith("mlflow-artifacts:")  # proxied: nodes never write artifacts
    local = mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=mlflow_server.url,
                                                dst_path=str(tmp_path / "model"))
    model = mlflow.pytorch.load_model(local)
    example = Model.load(local).load_input_example(local)
    with torch.no_grad():
        assert tuple(model(torch.as_tensor(example)).shape) == (len(example), 10)
    assert list((mlflow_server.root / "artifacts").rglob("MLmodel"))
    on_nodes = [p for p in cluster.temp.rglob("*")
                if p.name in ("MLmodel", "mlflow.db", "mlruns", "mlartifacts")]
    assert not on_nodes
    # Tune's experiment dir went to RAYNAS_STORAGE, the trials' checkpoints too (from the nodes).
    stored = s3.keys(f"results/{name}/")
    assert [k for k in stored if re.fullmatch(rf"results/{name}/experiment_state-.*\.json", k)]
    assert [k for k in stored if "/checkpoint_" in k]


def test_status_and_stop_a_running_job(cluster, mlflow_server, tmp_path):
    work = tmp_path / "work"
    (work / "spaces").mkdir(parents=True)
    from raynas.space import builtin_spaces

    space = work / "spaces" / "mine.yaml"
    shutil.copy(builtin_spaces()["small_cnn"], space)
    proc = raynas("launch", "cluster", "--address", cluster.address, "--no-wait",
                  "--tracking-uri", mlflow_server.url, "--storage", str(tmp_path / "results"),
                  "--", "--space", str(space), "--num-trials", "500", "--max-epochs", "50",
                  "--experiment", "long", cwd=work, env=cluster.submitter_env)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    client = cluster.client()

    def searching() -> bool:  # the space file reached the cluster, the trials are starting
        assert launcher.state_name(client.get_job_status(job_id)) in ("PENDING", "RUNNING"), (
            client.get_job_logs(job_id)[-2000:])
        return "searching:" in client.get_job_logs(job_id)

    wait_for("the long search", searching, 120)
    status = raynas("status", job_id, "--address", cluster.address, cwd=work,
                    env=cluster.submitter_env)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"{job_id}: RUNNING\n")
    assert "--space spaces/mine.yaml" in status.stdout  # rewritten to the shipped working dir
    stop = raynas("stop", job_id, "--address", cluster.address, cwd=work,
                  env=cluster.submitter_env)
    assert (stop.returncode, stop.stdout) == (0, f"{job_id}: STOPPED\n"), stop.stderr
    status = raynas("status", job_id, "--address", cluster.address, cwd=work,
                    env=cluster.submitter_env)
    assert status.stdout.startswith(f"{job_id}: STOPPED\n")
    # ... and its trials are gone with it: the cluster's CPUs are free for the next job
    wait_for("the stopped job's trials to end",
             lambda: not _trial_actors(cluster.address, cluster.token), 120)
    unknown = raynas("status", "raysubmit_nosuchjob", "--address", cluster.address, cwd=work,
                     env=cluster.submitter_env)
    assert unknown.returncode == 2
    assert unknown.stderr == f"raynas: error: no job 'raysubmit_nosuchjob' on {cluster.address}\n"


def test_a_version_mismatch_fails_the_job_with_one_line(cluster, tmp_path):
    import ray

    proc = raynas("launch", "cluster", "--address", cluster.address,
                  "--env", f"{launcher.PIN_ENV}=ray={ray.__version__},torch=0.0.1",
                  "--", "--space", "small_cnn", cwd=tmp_path, env=cluster.submitter_env,
                  timeout=180)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stdout.splitlines() if line.startswith("raynas: error:")]
    assert len(errors) == 1, proc.stdout[-3000:]
    assert errors[0].startswith("raynas: error: the cluster's packages differ from the "
                                "submitter's: torch ")
    assert errors[0].count("0.0.1 where the job was submitted") == 2  # each node named
    assert "searching:" not in proc.stdout
    assert proc.stderr.strip().endswith("FAILED")


@pytest.mark.parametrize("token", ["wrong", "missing"])
def test_a_wrong_or_missing_token_is_one_line_and_exit_2(cluster, tmp_path, token):
    """The cluster takes only its own token: the launcher's commands and a search joining it
    with --address say so in one line, exit 2."""
    env = clean_env(HOME=str(tmp_path))  # no ~/.ray/auth_token of this machine's own Ray
    if token == "wrong":
        env["RAY_AUTH_TOKEN"] = os.urandom(32).hex()
    for args in (["status", "raysubmit_x", "--address", cluster.address],
                 ["launch", "cluster", "--address", cluster.address, "--", "--num-trials", "1"],
                 ["search", "--address", cluster.gcs, "--num-trials", "1"]):
        proc = raynas(*args, cwd=tmp_path, env=env, timeout=180)
        errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
        assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
        assert errors[0].startswith("raynas: error: --address: "), errors
        assert "RAY_AUTH_TOKEN" in errors[0] and "Traceback" not in proc.stderr, errors
    # ... and the right token passes the same check
    check = subprocess.run([sys.executable, "-c", "import sys; from raynas.runtime import "
                            "check_token; check_token(sys.argv[1])", cluster.gcs],
                           env=cluster.submitter_env, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr[-2000:]


# ----------------------------------------------------------------- without a cluster: quick ones


@pytest.mark.parametrize("args", [
    ["launch", "cluster", "--address", "{address}", "--", "--space", "small_cnn"],
    ["status", "raysubmit_x", "--address", "{address}"],
    ["stop", "raysubmit_x", "--address", "{address}"],
])
def test_an_unreachable_cluster_is_one_line_and_exit_2_within_seconds(tmp_path, args):
    (port,) = free_ports(1)  # nothing listens there
    address = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    proc = raynas(*[a.format(address=address) for a in args], cwd=tmp_path, timeout=60)
    assert time.monotonic() - started < 20
    assert proc.returncode == 2
    assert proc.stderr == (f"raynas: error: --address: cannot reach a Ray cluster at {address} "
                           "(Connection refused)\n")


def test_cluster_launcher_script_passes_the_search_flags(tmp_path):
    (port,) = free_ports(1)
    proc = subprocess.run(["bash", str(REPO / "launchers" / "cluster.sh"),
                           f"http://127.0.0.1:{port}", "--num-trialz", "3"],
                          cwd=tmp_path, env=clean_env(), capture_output=True, text=True,
                          timeout=60)
    # The search flags are checked before anything is submitted.
    assert (proc.returncode, proc.stderr) == (
        2, "raynas: error: unrecognized arguments: --num-trialz 3\n")


def test_launch_k8s_dry_run_prints_a_rayjob_that_runs_the_search_flags(tmp_path):
    proc = subprocess.run(
        ["bash", str(REPO / "launchers" / "k8s.sh"), "--image", "reg.example/raynas:7",
         "--namespace", "nas", "--workers", "3", "--cpus", "2", "--memory", "6Gi",
         "--", "--space", "small_cnn", "--num-trials", "3"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    objs = list(yaml.safe_load_all(proc.stdout))
    (job,) = [o for o in objs if o["kind"] == "RayJob"]
    assert job["spec"]["entrypoint"] == ("raynas search --address auto --space small_cnn "
                                         "--num-trials 3")
    assert all(o["metadata"].get("namespace", "nas") == "nas" for o in objs)
    for obj in objs:
        kube.validate(obj)
        for spec in [obj["spec"].get("rayClusterSpec", obj["spec"])] if obj["kind"] in (
                "RayJob", "RayCluster") else []:
            for group in spec["workerGroupSpecs"]:
                worker = group["template"]["spec"]["containers"][0]
                assert worker["image"] == "reg.example/raynas:7"
                assert group["replicas"] == 3
                assert worker["resources"]["limits"] == {"cpu": "2", "memory": "6Gi"}
    # Without search flags the manifest's own command stays: the one the cluster test runs.
    default = raynas("launch", "k8s", cwd=tmp_path)
    assert default.returncode == 0, default.stderr
    (job,) = [o for o in yaml.safe_load_all(default.stdout) if o["kind"] == "RayJob"]
    assert job["spec"]["entrypoint"] == kube.DEFAULT_ENTRYPOINT


def test_launch_k8s_apply_failures_are_one_line_exit_2(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"  # no cluster configured: nothing is applied anywhere
    kubeconfig.write_text("")
    proc = raynas("launch", "k8s", "--apply", "--", "--space", "small_cnn", cwd=tmp_path,
                  env=clean_env(KUBECONFIG=str(kubeconfig)))
    assert proc.returncode == 2
    assert proc.stderr.startswith("raynas: error: kubectl apply failed: ")
    assert proc.stderr.count("\n") == 1
    no_kubectl = raynas("launch", "k8s", "--apply", cwd=tmp_path,
                        env={**clean_env(), "PATH": str(tmp_path)})
    assert no_kubectl.returncode == 2
    assert no_kubectl.stderr.startswith("raynas: error: kubectl not found on PATH")
    assert no_kubectl.stderr.count("\n") == 1


def test_the_manifests_mlflow_host_rules_admit_the_service_name(mlflow_server):
    # MLflow >= 3.5 answers 403 to unknown Host headers (its /health is exempt, so a health check
    # passes while every call fails): the manifest must admit "mlflow:5000", used in the cluster.
    api = f"{mlflow_server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    for host in ("mlflow:5000", "mlflow.raynas.svc.cluster.local:5000", "localhost:5000"):
        assert requests.get(api, headers={"Host": host}, timeout=10).status_code == 200, host
    assert requests.get(api, headers={"Host": "evil.example:5000"}, timeout=10).status_code == 403


# ------------------------------------------------------------------------------------- helpers


def test_zz_a_removed_worker_node_costs_retries_not_trials(cluster, mlflow_server, tmp_path):
    """Runs last in this module: it takes node_b away for good. A trial training there when
    the node goes is retried on the head from its last checkpoint; MLflow shows it once."""
    from mlflow.tracking import MlflowClient

    work = tmp_path / "work"
    work.mkdir()
    client, jobs = MlflowClient(mlflow_server.url), cluster.client()
    # The first trial must go to node_b: Tune hands a finished trial's actor to the next trial
    # even while that trial's own actor is still starting on another node, so where a node_b
    # actor starts slower than a trial runs (beside a CPU hog: 16 s against 8), every trial
    # ran on node_a (2 of 4 runs, 2026-12-07). Until one trains there, node_a's CPU is held.
    hold = jobs.submit_job(entrypoint="sleep 600", entrypoint_num_cpus=1,
                           entrypoint_resources={"node_a": 1})
    wait_for("node_a's CPU held", lambda: launcher.state_name(jobs.get_job_status(hold))
             == "RUNNING", 60)
    proc = raynas("launch", "cluster", "--address", cluster.address, "--no-wait",
                  "--tracking-uri", mlflow_server.url, "--storage", str(tmp_path / "results"),
                  "--", "--space", "small_cnn", "--dataset", "mnist5k", "--strategy", "grid",
                  "--scheduler", "fifo", "--num-trials", "3", "--max-epochs", "6",
                  "--retrain-epochs", "1", "--experiment", "node-loss", "--json",
                  cwd=work, env=cluster.submitter_env)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()

    def training_on_b() -> bool:
        experiment = client.get_experiment_by_name("node-loss")
        return bool(experiment and client.search_runs(
            [experiment.experiment_id], f"tags.`raynas.node_id` = '{cluster.nodes['node_b']}' "
            "and attributes.status = 'RUNNING'"))

    def running() -> bool:
        return launcher.state_name(jobs.get_job_status(job_id)) not in launcher.TERMINAL

    try:  # slow when CPUs are shared
        wait_for("a trial training on node_b", training_on_b, 480, alive=running)
    except BaseException:  # pytest.fail: what the job and the cluster were doing
        print(jobs.get_job_logs(job_id)[-6000:], _trial_actors(cluster.address, cluster.token),
              _alive_nodes(cluster.address, cluster.token))
        raise
    finally:
        jobs.stop_job(hold)
    cluster.worker.kill()  # the node crashes: its `ray start`, raylet, workers, all SIGKILLed
    _kill_leftovers(cluster.temp / "b")
    wait_for("the job to end", lambda: launcher.state_name(jobs.get_job_status(job_id))
             in launcher.TERMINAL, 420)
    logs = jobs.get_job_logs(job_id)
    assert launcher.state_name(jobs.get_job_status(job_id)) == "SUCCEEDED", logs[-3000:]
    summary = json.loads(logs.strip().splitlines()[-1])
    assert (summary["num_trials"], summary["num_failed"]) == (3, 0)
    trials = client.search_runs(
        [client.get_experiment_by_name("node-loss").experiment_id],
        f"tags.mlflow.parentRunId = '{summary['parent_run_id']}' and "
        "tags.`raynas.role` = 'trial'")
    assert len(trials) == 3 and all(r.info.status == "FINISHED" for r in trials)
    retried = [r for r in trials if int(r.data.tags.get("raynas.retries", 0)) >= 1]
    assert retried, logs[-3000:]
    for run in trials:  # one point per epoch, the retried trial included
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert steps == list(range(1, 7))
    assert retried[0].data.tags["raynas.node_id"] == cluster.nodes["node_a"]  # moved to the head


def _dashboard_missing() -> Exception | None:
    try:
        import ray.dashboard.optional_deps  # noqa: F401
    except ImportError as exc:
        return exc
    return None


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _state(address: str, token: str):
    """A client of the cluster's Ray state API (through its dashboard, with the token)."""
    from ray.util.state.api import StateApiClient

    return StateApiClient(address, headers={"authorization": f"Bearer {token}"})


def _alive_nodes(address: str, token: str) -> dict[str, str]:
    """node_a / node_b -> node id, for the nodes that are up (the Ray state API)."""
    from ray.util.state.common import ListApiOptions, StateResource

    try:
        nodes = _state(address, token).list(StateResource.NODES, ListApiOptions(),
                                            raise_on_missing_output=False)
    except Exception:  # the dashboard is still starting
        return {}
    return {name: n.node_id for n in nodes if n.state == "ALIVE"
            for name in ("node_a", "node_b") if name in (n.resources_total or {})}


def _trial_actors(address: str, token: str) -> list[tuple[str, str]]:
    """(node id, pid) of the Tune trial actors alive on the cluster (the Ray state API)."""
    from ray.util.state.common import ListApiOptions, StateResource

    actors = _state(address, token).list(StateResource.ACTORS, ListApiOptions(filters=[
        ("class_name", "=", "ImplicitFunc"), ("state", "=", "ALIVE")]),
        raise_on_missing_output=False)
    return [(a.node_id, a.pid) for a in actors]


def _stop_jobs(address: str, token: str) -> None:
    """Stop the jobs still running, so their drivers end with the cluster."""
    try:
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(address, headers={"authorization": f"Bearer {token}"})
        running = [j.submission_id for j in client.list_jobs()
                   if launcher.state_name(j.status) not in launcher.TERMINAL]
        for job_id in running:
            client.stop_job(job_id)
        deadline = time.monotonic() + 20
        while running and time.monotonic() < deadline:
            running = [j for j in running
                       if launcher.state_name(client.get_job_status(j)) not in launcher.TERMINAL]
            time.sleep(0.5)
    except Exception:  # the head is gone already
        pass


def _kill_leftovers(temp: Path) -> None:
    """Processes of this cluster that outlived `ray start` (e.g. job drivers): every one of them
    names the cluster's temp dir in its command line or its environment (the token path)."""
    mark = str(temp).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            text = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if mark in text:
            with contextlib.suppress(OSError):  # it ended meanwhile
                os.kill(int(entry.name), signal.SIGKILL)


def _manifest_allowed_hosts() -> str:
    (deployment,) = [d for d in yaml.safe_load_all((REPO / "k8s" / "base" / "mlflow.yaml")
                                                   .read_text()) if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    return env["MLFLOW_SERVER_ALLOWED_HOSTS"]
