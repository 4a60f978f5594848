"""A search's own folder kept on its remote storage (``s3://``, ``gs://``, any URI pyarrow reads).

With ``--storage s3://BUCKET/PREFIX`` Tune keeps its experiment in the bucket, but the search's
own folder (``raynas.json``, the MLflow ledger and its applied count, artifacts not yet logged)
is on the driver's local disk, which a lost pod takes with it. Tune syncs only its own driver
staging folder and the trials' checkpoints, so the folder is mirrored here, by hand, to
``STORAGE/EXPERIMENT/raynas/``: pushed when Tune saves its experiment state
(``MLflowTracker.get_state``), after each write of ``raynas.json`` and at the end of the search;
pulled by ``--resume auto`` on a new machine. A folder of its own, not files beside Tune's: a
restored Tune copies the experiment folder's top-level ``*.json`` into its staging folder and
uploads them again at every checkpoint, which would put old copies over these.

The mirror is never behind the Tune state it goes with: Tune snapshots its state, then asks the
callbacks for theirs (the push), then uploads the snapshot. Within a push, ``mlflow-applied.json``
is read before the ledger and uploaded after it (and artifacts before both), so the bucket never
holds an applied count beyond its ledger, or a ledger naming an artifact it lacks.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.fs

from raynas.errors import ConfigError
from raynas.runtime import stderr
from raynas.tracking.ledger import APPLIED, LEDGER

FOLDER = "raynas"  # the mirror's folder in Tune's experiment folder
STATE = "raynas.json"  # a search's folder has it (see raynas.experiment.state)

_OPEN: dict[tuple[str, str], Mirror] = {}  # one mirror per (remote, local) and process


def _line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


class Mirror:
    """``local`` (a folder) kept at ``remote`` (a URI). Picklable: only the two strings travel,
    and unpickling gives this process' mirror of them (see ``of``)."""

    @classmethod
    def of(cls, remote: str, local: str | Path) -> Mirror:
        """The same object on every call in one process, so that it pushes only what changed
        whoever calls it (the tracker Tune unpickles, the search itself)."""
        key = (remote.rstrip("/"), str(local))
        if key not in _OPEN:
            _OPEN[key] = cls(*key)
        return _OPEN[key]

    def __init__(self, remote: str, local: str | Path) -> None:
        self.remote = remote.rstrip("/")
        self.local = str(local)
        self._pushed: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns)
        self._fs: Any = None
        self._failing = False

    def __reduce__(self):
        return _reopen, (self.remote, self.local)

    @property
    def where(self) -> str:
        """The search's folder in the storage (Tune's experiment folder)."""
        return self.remote.removesuffix(f"/{FOLDER}")

    def __repr__(self) -> str:
        return f"Mirror({self.remote!r}, {self.local!r})"

    def filesystem(self) -> tuple[Any, str]:
        """pyarrow's filesystem for ``remote`` (as Tune resolves its storage) and the path."""
        if self._fs is None:
            self._fs = pyarrow.fs.FileSystem.from_uri(self.remote)
        return self._fs

    def check(self) -> None:
        """A one-line ConfigError unless the storage answers and its bucket exists."""
        try:
            fs, path = self.filesystem()
            bucket = path.split("/")[0]  # "" for a local path: nothing to check
            found = fs.get_file_info(bucket) if bucket else None
        except (OSError, ValueError) as exc:  # pyarrow's IO errors, ArrowInvalid
            raise ConfigError(f"--storage: cannot reach {self.where} ({_line(exc)})") from None
        if found is not None and found.type == pyarrow.fs.FileType.NotFound:
            raise ConfigError(f"--storage: {self.where}: there is no bucket {bucket!r} "
                              "(create it first)")

    def pull(self) -> bool:
        """Replace ``local`` with the remote copy if there is one (it has ``raynas.json``);
        True if it did. Raises a one-line ConfigError if the storage cannot be read."""
        self.check()
        fs, root = self.filesystem()
        local = Path(self.local)
        try:
            if fs.get_file_info(f"{root}/{STATE}").type != pyarrow.fs.FileType.File:
                return False
            files = [info.path for info in fs.get_file_info(
                pyarrow.fs.FileSelector(root, recursive=True))
                if info.type == pyarrow.fs.FileType.File]
            staging = local.with_name(f".{local.name}.pulling")
            shutil.rmtree(staging, ignore_errors=True)
            for path in files:
                target = staging / path[len(root):].lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                with fs.open_input_stream(path) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--storage: cannot read {self.remote} ({_line(exc)})") from None
        shutil.rmtree(local, ignore_errors=True)
        local.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(local)
        self._pushed = {rel: sig for rel, sig in self._signatures().items()}
        return True

    def push(self, warn: Callable[[str], None] = stderr) -> int:
        """Upload the files of ``local`` that changed since the last push (whole files);
        returns how many. A failure is a warning (once until a push succeeds again): the next
        push tries again, and Tune's own upload of its state fails alike."""
        local = Path(self.local)
        if not local.is_dir():
            return 0
        # The order matters (see the module docstring): applied count, then ledger, then the
        # rest; uploaded the other way round.
        last = [APPLIED, LEDGER]
        snapshot: dict[str, tuple[bytes, tuple[int, int]]] = {}
        for rel in last:
            if (sig := self._signature(local / rel)) and sig != self._pushed.get(rel):
                with contextlib.suppress(FileNotFoundError):
                    data = (local / rel).read_bytes()
                    # whole lines only: a line being appended goes with the next push
                    snapshot[rel] = (data[: data.rfind(b"\n") + 1] if rel == LEDGER else data,
                                     sig)
        others = [rel for rel, sig in self._signatures().items()
                  if rel not in last and sig != self._pushed.get(rel)]
        try:
            fs, root = self.filesystem()
            made: set[str] = set()
            for rel in [*sorted(others, key=lambda r: r == STATE), *reversed(last)]:
                target = f"{root}/{rel}"
                if type(fs).__name__ == "LocalFileSystem" and (up := target.rpartition("/")[0]
                                                               ) not in made:
                    fs.create_dir(up, recursive=True)  # object stores have no folders
                    made.add(up)
                if rel in snapshot:
                    data, sig = snapshot[rel]
                    with fs.open_output_stream(target) as out:
                        out.write(data)
                elif rel in others:
                    sig = self._signature(local / rel)
                    if sig is None:  # removed meanwhile
                        continue
                    with open(local / rel, "rb") as source, fs.open_output_stream(target) as out:
                        shutil.copyfileobj(source, out, 1 << 20)
                else:
                    continue
                self._pushed[rel] = sig
        except Exception as exc:  # noqa: BLE001 - a push must never fail the search
            if not self._failing:
                warn(f"cannot copy the search's folder to {self.remote} ({_line(exc)}); "
                     "retried at the next checkpoint")
            self._failing = True
            return 0
        if self._failing:
            warn(f"the search's folder is copied to {self.remote} again")
        self._failing = False
        return len(snapshot) + len(others)

    def _signatures(self) -> dict[str, tuple[int, int]]:
        local = Path(self.local)
        found = {}
        for path in local.rglob("*"):
            if path.name.startswith(".") or not path.is_file():  # e.g. a temporary file
                continue
            if (sig := self._signature(path)) is not None:
                found[path.relative_to(local).as_posix()] = sig
        return found

    @staticmethod
    def _signature(path: Path) -> tuple[int, int] | None:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        return stat.st_size, stat.st_mtime_ns


def _reopen(remote: str, local: str) -> Mirror:
    """Unpickling a mirror gives this process' one (a plain function, as ``ledger._reopen``)."""
    return Mirror.of(remote, local)
