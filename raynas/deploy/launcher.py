"""Run a search on an existing Ray cluster through the Ray Jobs API (``raynas launch cluster``).

The job is ``raynas search --address auto <flags>``, the same command the Kubernetes RayJob runs.
Its runtime environment ships what the submitter has and the cluster may not: the working
directory (so ``--space my_space.yaml`` resolves there), the submitter's raynas code (as a
``py_modules`` package, so the cluster runs exactly that code) and environment variables
(``MLFLOW_TRACKING_URI``, ``RAYNAS_STORAGE``, …). The cluster's own packages are used, not a pip
install: the submitter's ray/torch/mlflow/raynas versions go into the job's metadata and its
environment, and the job checks every node against them before it starts (``check_pins``).

Nothing here imports Ray at module level: every ``raynas`` command imports this module (for
``PIN_ENV``), and the CLI parses and rejects bad input before Ray loads.
"""

from __future__ import annotations

import asyncio
import shlex
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import raynas
from raynas.errors import ConfigError, RaynasError
from raynas.runtime import TOKEN_HINT, auth_headers, ray_session
from raynas.space import builtin_dir

#: The environment variable that carries the submitter's versions into the job.
PIN_ENV = "RAYNAS_PINNED_VERSIONS"
PINNED = ("ray", "torch", "mlflow", "raynas")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
SEARCH = "raynas search --address auto"
PROBE_TIMEOUT_S = 5.0
# What a working directory never needs to ship (on top of its .gitignore, which Ray honours).
EXCLUDES = [".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".ruff_cache", "mlruns",
            "mlartifacts", "mlflow.db", "ray_results", "*.pt", "*.ckpt"]
# A dead tracking server must not stall the job (MLflow retries for minutes by default).
MLFLOW_ENV_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class LaunchError(RaynasError):
    """A job cannot be submitted, found, followed or stopped."""


@dataclass
class Submitted:
    job_id: str
    status: str | None  # the final status when the job was followed to its end, else None


# ----------------------------------------------------------------------------------- submitting


def entrypoint(search_flags: Sequence[str]) -> str:
    """The job's command: the search joins the cluster it runs on, whatever the flags say."""
    return " ".join([SEARCH, *(shlex.quote(f) for f in search_flags)])


def local_versions() -> dict[str, str]:
    """ray/torch/mlflow/raynas as installed here, read without importing them."""
    versions = {name: _installed(name) for name in PINNED if name != "raynas"}
    return {**versions, "raynas": raynas.__version__}


def ship_paths(search_flags: Sequence[str], working_dir: Path) -> list[str]:
    """Rewrite local file arguments (``--space PATH``, ``--dataset npz:PATH``/``folder:DIR``)
    relative to the shipped working directory, where the job starts."""
    out: list[str] = []
    flags = list(search_flags)
    i = 0
    while i < len(flags):
        flag, glued = flags[i], "=" in flags[i]
        if glued:
            flag, value = flag.split("=", 1)
        elif i + 1 < len(flags):
            value = flags[i + 1]
        else:
            value = None
        if flag not in ("--space", "--dataset") or value is None:
            out.append(flags[i])
            i += 1
            continue
        prefix, path = "", value
        if flag == "--dataset":
            scheme, _, rest = value.partition(":")
            prefix, path = (f"{scheme}:", rest) if scheme in ("npz", "folder") else ("", "")
        if path and Path(path).expanduser().exists():
            value = prefix + _relative(flag, Path(path).expanduser(), working_dir)
        out.extend([f"{flag}={value}"] if glued else [flag, value])
        i += 1 if glued else 2
    return out


def runtime_env(working_dir: Path, env: Mapping[str, str], pip: Sequence[str] | None,
                package: Path) -> dict[str, Any]:
    """The job's runtime environment: working dir, raynas as a py_module, env vars, [pip]."""
    renv: dict[str, Any] = {"working_dir": str(working_dir), "excludes": EXCLUDES,
                            "py_modules": [str(package)], "env_vars": dict(env)}
    if pip:
        renv["pip"] = list(pip)
    return renv


def submit(address: str, search_flags: Sequence[str], *, working_dir: str | Path = ".",
           env: Mapping[str, str] | None = None, pip: Sequence[str] | None = None,
           follow: bool = False, out: IO[str] | None = None) -> Submitted:
    """Submit ``raynas search --address auto <flags>`` to the cluster at ``address``
    (``http://HEAD:8265``); with ``follow``, stream its logs to ``out`` until it ends.

    ``env`` becomes the job's environment variables on every node (e.g. MLFLOW_TRACKING_URI,
    RAYNAS_STORAGE); ``RAYNAS_PINNED_VERSIONS`` is set to the submitter's versions unless ``env``
    sets it (an empty value switches the check off).
    """
    folder = Path(working_dir).expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(f"--working-dir: not a directory: {working_dir}")
    flags = ship_paths(search_flags, folder)
    versions = local_versions()
    job_env = {PIN_ENV: ",".join(f"{k}={v}" for k, v in versions.items())}
    if (env or {}).get("MLFLOW_TRACKING_URI", "").startswith(("http://", "https://")):
        job_env.update(MLFLOW_ENV_DEFAULTS)
    job_env.update(env or {})
    client = connect(address)
    with tempfile.TemporaryDirectory(prefix="raynas-pkg-") as staging:
        renv = runtime_env(folder, job_env, pip, _package(Path(staging)))
        try:
            job_id = client.submit_job(entrypoint=entrypoint(flags), runtime_env=renv,
                                       metadata={f"{k}_version": v for k, v in versions.items()})
        except (RuntimeError, ValueError, OSError) as exc:
            raise LaunchError(f"cannot submit the job to {address}: {_one_line(exc)}") from None
    return Submitted(job_id, follow_logs(address, job_id, out, client) if follow else None)


def follow_logs(address: str, job_id: str, out: IO[str] | None = None, client=None) -> str:
    """Stream a job's logs to ``out`` (stdout) until it ends; return its final status."""
    client = client or connect(address)
    out = out or sys.stdout

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    try:
        asyncio.run(tail())
    except RuntimeError as exc:
        raise LaunchError(f"lost the log stream of job {job_id} ({_one_line(exc)}); it may "
                          f"still run: raynas status {job_id} --address {address}") from None
    return _wait_terminal(client, job_id, 30.0)


# ------------------------------------------------------------------------------ status and stop


def status(address: str, job_id: str) -> Any:
    """The job's details (``ray.job_submission.JobDetails``): status, message, entrypoint,
    metadata, start/end times."""
    return _job_info(connect(address), address, job_id)


def stop(address: str, job_id: str, wait_s: float = 30.0) -> str:
    """Ask the job to stop; wait up to ``wait_s`` for it to end; return its status."""
    client = connect(address)
    _job_info(client, address, job_id)  # a clear error for an unknown id
    try:
        client.stop_job(job_id)
    except RuntimeError as exc:
        raise LaunchError(f"cannot stop job {job_id}: {_one_line(exc)}") from None
    return _wait_terminal(client, job_id, wait_s)


def connect(address: str):
    """A JobSubmissionClient for ``address``; a one-line ConfigError within seconds if nothing
    answers there (the client itself would wait for the operating system's TCP timeout)."""
    url = address if "://" in address else f"http://{address}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--address: expected the Ray dashboard's URL, e.g. "
                          f"http://HEAD:8265, got {address!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ConfigError(f"--address: cannot reach a Ray cluster at {address} ({reason})"
                          ) from None
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(url.rstrip("/"), headers=auth_headers())
    except Exception as exc:  # ConnectionError, RuntimeError, AuthenticationError, …
        hint = ""
        if "uthentication" in type(exc).__name__ + str(exc):
            hint = f"; the cluster uses token authentication: {TOKEN_HINT}"
        raise ConfigError(f"--address: {address} is not a Ray dashboard with the Jobs API "
                          f"({_one_line(exc)}){hint}") from None


# --------------------------------------------------------------------------- in the job: pins


def check_pins(spec: str, address: str | None) -> str:
    """Compare every alive node's ray/torch/mlflow/raynas with the submitter's (``spec``:
    ``ray=2.60.0,torch=…``); raise a one-line ConfigError naming each mismatch, else return a
    one-line summary. Runs in the job, before the search starts (which connects anew)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    wanted = dict(item.split("=", 1) for item in spec.split(",") if "=" in item)
    with ray_session(address or "auto"):
        nodes = [n for n in ray.nodes() if n["Alive"]]
        probe = ray.remote(num_cpus=0)(_node_versions)  # 0 CPUs: runs even on a busy cluster
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote() for n in nodes]
        try:
            found = ray.get(refs, timeout=120)
        except ray.exceptions.GetTimeoutError:
            raise ConfigError("the version check got no answer from every node within 120 s"
                              ) from None
    problems = []
    for node, versions in zip(nodes, found, strict=True):
        where = f"{node['NodeManagerAddress']} ({node['NodeID'][:8]})"
        for name, want in wanted.items():
            have = versions.get(name, "not installed")
            if have != want:
                problems.append(f"{name} {have} on node {where}, {want} where the job was "
                                "submitted")
    if problems:
        raise ConfigError("the cluster's packages differ from the submitter's: "
                          + "; ".join(problems)
                          + f" (install the same versions, or switch the check off with "
                            f"--env {PIN_ENV}=)")
    shown = ", ".join(f"{k} {v}" for k, v in wanted.items())
    return (f"versions match the submitter's on {len(nodes)} node(s): {shown}; raynas from "
            f"{found[0].get('raynas_path', '?')}")


def _node_versions() -> dict[str, str]:
    """What one node runs: installed versions, and the raynas that a worker imports there."""
    versions = {name: _installed(name) for name in PINNED if name != "raynas"}
    return {**versions, "raynas": raynas.__version__,
            "raynas_path": str(Path(raynas.__file__).parent)}


# -------------------------------------------------------------------------------------- helpers


def _installed(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _relative(flag: str, path: Path, working_dir: Path) -> str:
    try:
        return path.resolve().relative_to(working_dir).as_posix()
    except ValueError:
        raise ConfigError(f"{flag}: {path} is outside the working directory {working_dir}, "
                          "which is what reaches the cluster: move it there or pass "
                          "--working-dir") from None


def _package(staging: Path) -> Path:
    """The raynas package as an installed copy looks (YAML spaces in raynas/search_spaces),
    staged so that a source checkout ships the same thing a wheel holds."""
    source = Path(raynas.__file__).resolve().parent
    target = staging / "raynas"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    spaces = target / "search_spaces"
    if not spaces.is_dir():
        shutil.copytree(builtin_dir(), spaces,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def _job_info(client, address: str, job_id: str):
    try:
        return client.get_job_info(job_id)
    except RuntimeError as exc:
        if "404" in str(exc) or "does not exist" in str(exc):
            raise LaunchError(f"no job {job_id!r} on {address}") from None
        raise LaunchError(f"cannot read job {job_id}: {_one_line(exc)}") from None


def _wait_terminal(client, job_id: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        state = state_name(client.get_job_status(job_id))
        if state in TERMINAL or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def state_name(state: Any) -> str:
    """A JobStatus as its plain name (``SUCCEEDED``)."""
    return str(getattr(state, "value", state))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."

