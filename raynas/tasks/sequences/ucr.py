"""``ucr:NAME``: the UCR/UEA time-series classification sets, read from their ``.ts`` files.

The sets that ship inside the ``aeon`` wheel (``aeon/datasets/data``: GunPoint, ArrowHead,
ItalyPowerDemand, OSULeaf, BasicMotions, JapaneseVowels, ...) are read from the files
themselves, found through ``importlib.util.find_spec`` without importing aeon, so aeon's own
dependencies (numba, its pandas pin) are not needed: ``pip install --no-deps 'aeon==1.6.*'``.
``ucr:DIR/NAME`` reads an archive on disk laid out the same way (``DIR/NAME/NAME_TRAIN.ts`` or
``DIR/NAME_TRAIN.ts``, and its ``_TEST``). The archive's own train/test split is kept: the
search sees the training file only, the test file scores the final model once.

A set of series of different lengths is padded at the end with NaN to the longest, in train
and test alike: the models read NaN steps as padding (``raynas.models.macro.padding``), so the
padding travels inside the one input tensor, through training, MLflow and export alike.
Missing values (``?``) are NaN too; a step missing in only some channels becomes the mean.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np

from raynas.data import Arrays
from raynas.errors import DataError, did_you_mean

INSTALL = "pip install --no-deps 'aeon==1.6.*'"
_PAIR = re.compile(r"\(([^()]*)\)")  # a timestamped value: (time,value)


def bundled_root(spec: str) -> Path:
    """The folder of the sets inside the installed aeon wheel, or a one-line DataError."""
    found = importlib.util.find_spec("aeon")
    if found is None or not found.submodule_search_locations:
        raise DataError(f"{spec}: the UCR/UEA sets ship inside aeon, which is not installed: "
                        f"{INSTALL}")
    return Path(next(iter(found.submodule_search_locations))) / "datasets" / "data"


def sets(root: Path) -> dict[str, tuple[Path, Path]]:
    """The classification sets under ``root``: name -> (train file, test file)."""
    found = {}
    for train in sorted([*root.glob("*_TRAIN.ts"), *root.glob("*/*_TRAIN.ts")]):
        test = train.with_name(train.name.replace("_TRAIN.ts", "_TEST.ts"))
        if test.is_file() and _is_classification(train):
            found[train.name.removesuffix("_TRAIN.ts")] = (train, test)
    return found


def _is_classification(path: Path) -> bool:
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.lower().startswith("@classlabel"):
                return line.split()[1].lower() == "true"
            if line.lower().startswith("@data"):
                return False
    return False


def read_ucr(spec: str, argument: str) -> Arrays:
    """The set ``argument`` names (``NAME`` bundled with aeon, or ``DIR/NAME``) as inputs
    (N, C, L) padded with NaN, string labels, and its test split."""
    folder, _, name = argument.rpartition("/")
    if folder:
        root = Path(folder)
        if not root.is_dir():
            raise DataError(f"{spec}: directory not found: {root}")
    else:
        root = bundled_root(spec)
    found = sets(root)
    if name not in found:
        where = str(root) if folder else f"aeon's bundled sets ({root})"
        raise DataError(f"{spec}: no classification set {name!r} in {where}"
                        f"{did_you_mean(name, found)}; found: {', '.join(found) or 'none'}")
    train_path, test_path = found[name]
    (x, y, header), (x_test, y_test, _) = (read_ts(spec, p) for p in (train_path, test_path))
    unseen = sorted(set(y_test) - set(y))
    if unseen:
        raise DataError(f"{spec}: the test file has labels the training file never has: "
                        f"{', '.join(unseen[:5])}")
    if header.get("equallength") == "true" and len({s.shape[1] for s in x + x_test}) > 1:
        raise DataError(f"{spec}: {train_path.name} says @equalLength true, but its series "
                        f"have lengths {min(s.shape[1] for s in x)} to "
                        f"{max(s.shape[1] for s in x)}")
    length = max(s.shape[1] for s in x + x_test)
    return padded(x, length), np.asarray(y), (padded(x_test, length), np.asarray(y_test))


def padded(series: list[np.ndarray], length: int) -> np.ndarray:
    """Series (C, L_i) as one array (N, C, length), NaN after each one's end."""
    out = np.full((len(series), series[0].shape[0], length), np.nan, dtype=np.float32)
    for i, s in enumerate(series):
        out[i, :, : s.shape[1]] = s
    return out


def read_ts(spec: str, path: Path) -> tuple[list[np.ndarray], list[str], dict[str, str]]:
    """A ``.ts`` file's series (each (C, L), NaN for ``?``), labels and header
    (lower-cased keys)."""
    header: dict[str, str] = {}
    series, labels = [], []
    data = False
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith(("#", "%")):
                continue
            if not data:
                key, _, value = line.partition(" ")
                if key.lower() == "@data":
                    data = True
                elif key.startswith("@"):
                    header[key[1:].lower()] = value.strip().lower()
                continue
            *channels, label = line.split(":")
            try:
                values = [_values(c) for c in channels]
            except ValueError as exc:
                raise DataError(f"{spec}: {path.name}:{number}: not a number ({exc})") from None
            if not values or not all(len(v) for v in values):
                raise DataError(f"{spec}: {path.name}:{number}: a series without values")
            width = max(len(v) for v in values)
            series.append(np.array([v + [np.nan] * (width - len(v)) for v in values],
                                   dtype=np.float32))
            labels.append(label.strip())
    if not series:
        raise DataError(f"{spec}: {path.name}: no series after @data")
    if len({s.shape[0] for s in series}) > 1:
        raise DataError(f"{spec}: {path.name}: the series have different numbers of "
                        "dimensions")
    return series, labels, header


def _values(text: str) -> list[float]:
    """One dimension's values: ``1.5,?,2`` or timestamped ``(t,1.5),(t,2)``; ``?`` is NaN."""
    pairs = _PAIR.findall(text)
    items = [p.rpartition(",")[2] for p in pairs] if pairs else text.strip().rstrip(",").split(",")
    return [np.nan if v.strip() == "?" else float(v) for v in items]
