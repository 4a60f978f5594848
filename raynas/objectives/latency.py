"""A latency lookup table (ProxylessNAS, Cai et al. 2019): a candidate's latency predicted
without building it, as the sum of its parts' latencies, each part profiled once per device.

A builder that supports prediction exposes ``latency_units(arch, input_shape, num_classes)``:
the parts of the network (``Unit``: a key naming the module and its input fully, a factory, the
input shape, how often it runs). Each unit is built and timed alone the first time its key is
seen on a device (at a batch size and thread count), and the time is kept in
``~/.raynas/latency/<device>.json`` (``$RAYNAS_LATENCY_DIR`` moves it). No maintained library
keeps such a table for arbitrary PyTorch modules (nn-Meter predicts fixed edge devices only),
so this is written here; the timing itself is ``objectives.measure_latency``.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from raynas.objectives.measure import measure_latency
from raynas.ops.blocks import Unit


def device_name(device: torch.device) -> str:
    """A file-name-safe name of the hardware: the GPU model, or the CPU model."""
    if device.type == "cuda":
        name = f"cuda-{torch.cuda.get_device_name(device)}"
    else:
        name = platform.machine() or "unknown"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1]
                    break
        except OSError:
            pass
        name = f"cpu-{name}"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def table_dir() -> Path:
    return Path(os.environ.get("RAYNAS_LATENCY_DIR", "~/.raynas/latency")).expanduser()


class LatencyTable:
    """Unit latencies (ms) on one device at one batch size and thread count, backed by a JSON
    file that any number of processes may extend at once (``save`` merges under a lock)."""

    def __init__(self, device: torch.device | str = "cpu", batch: int = 1,
                 folder: Path | None = None) -> None:
        self.device = torch.device(device)
        self.batch = batch
        self.path = (folder or table_dir()) / f"{device_name(self.device)}.json"
        self.prefix = f"b{batch}/t{torch.get_num_threads()}/"
        self.entries: dict[str, float] = _read(self.path)
        self.new: dict[str, float] = {}

    def latency(self, unit: Unit) -> float:
        """The unit's latency: from the table, else profiled now (and kept for ``save``)."""
        key = self.prefix + unit.key
        if key not in self.entries:
            module = unit.make().to(self.device)
            self.entries[key] = self.new[key] = measure_latency(module, unit.input_shape,
                                                                self.batch)
        return self.entries[key]

    def predict(self, units: Sequence[Unit]) -> float:
        """Predicted milliseconds of the network made of ``units``; new entries are saved."""
        total = sum(unit.count * self.latency(unit) for unit in units)
        self.save()
        return total

    def save(self) -> None:
        """Merge the new entries into the file: under an exclusive lock, re-read what others
        wrote meanwhile, and replace the file atomically (readers never see half of it)."""
        if not self.new:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            merged = {**_read(self.path), **self.new}
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(fd, "w") as out:
                json.dump(merged, out, indent=0, sort_keys=True)
            os.replace(tmp, self.path)
        self.entries.update(merged)
        self.new = {}


def _read(path: Path) -> dict[str, float]:
    try:
        return {k: float(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):  # absent, or not written by us: start afresh
        return {}
