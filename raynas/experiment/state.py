"""A search's folder and what its ``raynas.json`` says: the typed state that ``--resume``,
``raynas extend`` and ``raynas sync`` start from.

A search's folder is ``STORAGE/NAME`` (beside Tune's files) for a local storage, or, for a URI,
``LEDGERS/<hash of the URI>/NAME`` on this machine, mirrored to ``STORAGE/NAME/raynas``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from raynas.config import SearchConfig
from raynas.errors import ConfigError
from raynas.runtime import stderr
from raynas.tracking.files import read_json, write_atomic
from raynas.tracking.mirror import FOLDER as MIRROR
from raynas.tracking.mirror import STATE, Mirror

AUTO = "auto"  # --resume auto: resume the search at --storage/EXPERIMENT if there is one
DEFAULT_STORAGE = "~/ray_results"  # Tune's default
# The folder of a search whose storage is a URI (mirrored there: see raynas.tracking.mirror).
LEDGERS = Path(os.environ.get("RAYNAS_LEDGERS") or "~/.raynas/ledgers").expanduser().resolve()
#: Settings of the flat raynas.json written before the strategy options, now options of the
#: strategy that had them: old name -> (strategy, option).
OLD_OPTIONS = {"proxy": ("zero_cost", "proxy"), "zc_candidates": ("zero_cost", "candidates"),
               "zc_top_k": ("zero_cost", "top_k"), "supernet": ("oneshot", "supernet"),
               "oneshot_searcher": ("oneshot", "searcher")}


@dataclass
class SearchState:
    """A ledger folder's ``raynas.json``: a search's (``config`` set: its ``SearchConfig``,
    nested as ``asdict`` writes it) or a retrain's.

    ``parts``: the Tune experiments of a search, in order - the first run, then one per
    ``extend`` (Tune cannot add samples to a finished experiment)."""

    folder: str
    tracking_uri: str
    experiment_id: str
    config: dict[str, Any] | None = None
    tune_path: str = ""
    mirror: str | None = None  # the folder's copy in a bucket (a URI --storage)
    segments: list[dict[str, Any]] = field(default_factory=list)
    scalarizer: dict[str, Any] | None = None  # measured once, reused on resume
    plan: dict[str, Any] | None = None  # a time budget's plan (``BudgetPlan``), reused on resume
    role: str | None = None  # "retrain" for a retrain's ledger folder

    @classmethod
    def read(cls, path: str, search: bool = True) -> SearchState:
        """What a search folder says (``--resume``, ``extend``), or, with ``search=False``, any
        ledger folder (``raynas sync``: a retrain's too)."""
        folder = Path(path).expanduser().resolve()
        saved = read_json(folder / STATE, stderr) if folder.is_dir() else None
        if saved is None:
            raise ConfigError(f"--resume: {path}: not a raynas search folder (no {STATE}); the "
                              "folder is printed when a search starts and tagged raynas.folder "
                              "on its MLflow run")
        if search and "config" not in saved:
            raise ConfigError(f"--resume: {path}: the ledger folder of a "
                              f"{saved.get('role', 'retrain')}, not of a search: only raynas "
                              "sync takes it")
        known = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in saved.items() if k in known}, "folder": str(folder)})

    def save(self) -> None:
        """Write ``raynas.json`` (and copy the folder to its bucket, if it has one)."""
        data = {k: v for k, v in asdict(self).items() if v not in (None, [])}
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        write_atomic(Path(self.folder) / STATE, json.dumps(data, indent=1))
        if (mirror := self.mirrored()) is not None:
            mirror.push()

    def mirrored(self) -> Mirror | None:
        return Mirror.of(self.mirror, self.folder) if self.mirror else None

    @property
    def parts(self) -> list[dict[str, Any]]:
        return self.segments or [{"tune_path": self.tune_path}]

    def search_config(self) -> SearchConfig:
        """The saved settings. A flat ``config`` (written before the settings had groups) is
        read too, its zero_cost and oneshot flags as the options they became."""
        assert self.config is not None
        settings = {k: v for k, v in self.config.items() if k not in OLD_OPTIONS}
        options = {option: str(self.config[old]) for old, (strategy, option)
                   in OLD_OPTIONS.items() if old in self.config
                   and self.config.get("strategy") == strategy}
        return SearchConfig.of({**settings, **({"strategy_options": options} if options else {})})

    def settings(self, given: SearchConfig) -> SearchConfig:
        """A resumed search runs with its saved settings; only the cluster it joins is new."""
        saved = self.search_config()
        return saved.replace(resume=self.folder,
                             address=given.resources.address or saved.resources.address)


def storage_of(storage: str | None) -> str:
    """The storage path or URI (``--storage``, else its defaults); a local path made absolute
    (Tune takes no relative one)."""
    base = storage or os.environ.get("RAYNAS_STORAGE") or DEFAULT_STORAGE
    return base if "://" in base else str(Path(base).expanduser().absolute())


def folder_of(base: str, name: str) -> Path:
    """A search's own folder (raynas.json, the MLflow ledger) for storage ``base``: two
    buckets' searches of one name do not meet."""
    if "://" not in base:
        return Path(base).expanduser() / name
    return LEDGERS / hashlib.sha256(base.rstrip("/").encode()).hexdigest()[:12] / name


def auto_folder(storage: str | None, experiment: str) -> Path:
    """Where ``--resume auto`` keeps a search: ``STORAGE/EXPERIMENT``, where every (re)start of
    the driver finds it - a KubeRay retry runs on a brand-new cluster. For a URI the copy in
    the storage is the truth (Tune resumes from the state there): it replaces the local folder,
    and a local folder the storage does not have is dropped."""
    base = storage_of(storage)
    folder = folder_of(base, experiment).resolve()
    if "://" in base and not Mirror.of(f"{base.rstrip('/')}/{experiment}/{MIRROR}",
                                       folder).pull():
        shutil.rmtree(folder, ignore_errors=True)
    return folder
