"""The process around a search: joining or starting Ray, and progress lines on stderr."""

from __future__ import annotations

import contextlib
import logging
import os
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


def stderr(message: str) -> None:
    """Progress goes to stderr, so ``--json`` output on stdout stays machine-readable."""
    print(f"[raynas {time.monotonic() - _START:6.1f}s] {message}", file=sys.stderr, flush=True)


def init_ray(address: str | None, progress: Callable[[str], None], **options: Any) -> bool:
    """Start or join Ray unless the caller already did; True if we started it. ``options``
    go to ``ray.init`` (``num_cpus`` for a local instance of a set size, ...)."""
    import ray  # a light leaf (design.md, layer 3): Ray loads when a use case opens it

    if ray.is_initialized():
        return False
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
