"""The process around a search: joining or starting Ray, and progress lines on stderr."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from raynas.errors import ConfigError

_START = time.monotonic()
# Tune's default output engine prints an experiment banner and a TensorBoard hint on stdout
# whatever RunConfig(verbose=0) says (Ray 2.60: ``ProgressReporter.experiment_started``); its
# legacy engine, the one Ray Client runs, honours verbose=0. stdout is raynas's: the summary,
# or one JSON document with --json.
TUNE_OUTPUT = {"RAY_AIR_NEW_OUTPUT": "0"}
PROBE_TIMEOUT_S = 5.0
TOKEN_HINT = "set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH (a file) to the cluster's token"


def stderr(message: str) -> None:
    """Progress goes to stderr, so ``--json`` output on stdout stays machine-readable."""
    print(f"[raynas {time.monotonic() - _START:6.1f}s] {message}", file=sys.stderr, flush=True)


def init_ray(address: str | None, progress: Callable[[str], None], **options: Any) -> bool:
    """Start or join Ray unless the caller already did; True if we started it. ``options``
    go to ``ray.init`` (``num_cpus`` for a local instance of a set size, ...)."""
    import ray  # a light leaf (design.md, layer 3): Ray loads when a use case opens it

    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    if re.fullmatch(r"[\w.\-]+:\d+", target):  # a cluster's GCS (not local, auto, ray://)
        check_token(target)
    try:
        # "local" unless told otherwise: a cluster someone started with `ray start` on this
        # machine is joined only with --address auto (plain ray.init() would join it).
        ray.init(**{"address": address or os.environ.get("RAY_ADDRESS") or "local",
                    "include_dashboard": False, "logging_level": logging.WARNING,
                    "log_to_driver": False, "configure_logging": True, **options})
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = address or "a local instance"
        reason = " ".join(str(exc).split()) or type(exc).__name__  # one line
        raise ConfigError(f"--address: cannot connect to Ray at {where} ({reason})") from None
    resources = ray.cluster_resources()
    progress(f"Ray: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")
    return True


def auth_headers() -> dict[str, str]:
    """Ray's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) as the header its
    HTTP and gRPC servers take, for clusters with token authentication (Ray 2.60 turns it on for
    local clusters, 2.61 for all); none if RAY_AUTH_MODE=disabled or no token is found."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return {}
    from ray._raylet import AuthenticationTokenLoader

    return dict(AuthenticationTokenLoader.instance().get_token_for_http_header(
        ignore_auth_mode=True) or {})


def check_token(address: str) -> None:
    """A one-line ConfigError within seconds if the Ray cluster at ``address`` (its GCS,
    HOST:PORT) refuses this process's token, wrong or missing: ``ray.init`` would retry for
    about 20 s, print a warning a second from Ray's C++ client, and end with an error that
    names no token. Anything else (nothing listens there, a Ray without authentication) is
    left to ``ray.init``."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    headers = auth_headers()
    with grpc.insecure_channel(address) as channel:
        try:
            gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(), timeout=PROBE_TIMEOUT_S,
                metadata=tuple(headers.items()))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                given = "refuses the token given" if headers else "got no token"
                raise ConfigError(f"--address: the Ray cluster at {address} uses token "
                                  f"authentication and {given}: {TOKEN_HINT}") from None


@contextlib.contextmanager
def ray_session(address: str | None = None, progress: Callable[[str], None] = stderr,
                **options: Any) -> Iterator[bool]:
    """Ray for the length of a ``with`` block: joined or started as ``init_ray`` does, and shut
    down at the end only if this block started it (a caller's own Ray instance stays up).
    Yields whether it started Ray. Every use case opens Ray through this one door, so every
    Tuner they fit, restored ones included, keeps off stdout (``TUNE_OUTPUT``)."""
    import ray

    os.environ.update(TUNE_OUTPUT)
    started = init_ray(address, progress, **options)
    try:
        yield started
    finally:
        if started:
            ray.shutdown()
