"""Segmentation volumes of any shape, spacing and orientation, streamed from disk.

``nifti:DIR`` (DIR/images/*.nii.gz and a mask of the same name in DIR/labels/, optionally
DIR/splits.json naming the train / val / test files) and ``msd:DIR`` (the Medical Segmentation
Decathlon's layout: DIR/dataset.json with its ``labels`` and ``training`` pairs) are read the same
way: every volume and its mask are reoriented (MONAI ``Orientationd``) and resampled
(``Spacingd``; the image bilinear, the mask nearest) to one target spacing and orientation, by
default the median spacing of the data and RAS, cropped to the image's foreground
(``CropForegroundd``), the image z-scored per channel (``NormalizeIntensityd``) and the mask
stored as uint8. Options follow the folder: ``nifti:DIR:spacing=2`` (mm, or ``1.5,1.5,3``),
``:orientation=LPS``, ``:cache=FOLDER``.

Nothing is held in memory: the loader checks and preprocesses one volume at a time into a MONAI
``PersistentDataset`` on disk (``~/.cache/raynas/volumes/<hash of the files and options>``,
written under a temporary name and renamed when every volume passed, so bad input leaves
nothing behind), and trials read their batches back from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import monai.transforms as t
import numpy as np
import torch
from monai.data import PersistentDataset

from raynas.data.arrays import split as split_arrays
from raynas.errors import DataError
from raynas.tasks.segmentation.data import nibabel_for, read_labelled

SUFFIXES = (".nii.gz", ".nii")
KEYS = ("image", "label")
SPLITS = ("train", "val", "test")
FRACTIONS = (0.70, 0.15, 0.15)  # of the volumes, when the folder does not split them
#: Bump when the preprocessing changes: cached volumes of an older version are not reused.
VERSION = 1


def stem(path: Path) -> str:
    return next(path.name[: -len(s)] for s in SUFFIXES if path.name.endswith(s))


@dataclass(frozen=True)
class Options:
    """How volumes are brought to one grid: the spacing in mm (None: the median of the data),
    the orientation's axis codes and the cache folder."""

    spacing: tuple[float, float, float] | None = None
    orientation: str = "RAS"
    cache: Path = field(default_factory=lambda: Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "raynas" / "volumes")


def parse(spec: str, argument: str) -> tuple[Path, Options]:
    """``DIR[:spacing=S][:orientation=CODES][:cache=FOLDER]`` -> the folder and its options."""
    folder, *rest = argument.split(":")
    options: dict[str, Any] = {}
    for part in rest:
        key, _, value = part.partition("=")
        if key == "spacing":
            try:
                numbers = tuple(float(v) for v in value.split(","))
            except ValueError:
                numbers = ()
            if len(numbers) not in (1, 3) or min(numbers) <= 0:
                raise DataError(f"{spec}: spacing={value}: give one positive number of mm or "
                                "three (e.g. spacing=2 or spacing=1.5,1.5,3)")
            options["spacing"] = numbers * 3 if len(numbers) == 1 else numbers
        elif key == "orientation":
            codes = value.upper()
            axes = [{"L": 0, "R": 0, "P": 1, "A": 1, "I": 2, "S": 2}.get(c) for c in codes]
            if len(codes) != 3 or sorted(a for a in axes if a is not None) != [0, 1, 2]:
                raise DataError(f"{spec}: orientation={value}: three axis codes, one of L/R, "
                                "P/A and I/S each (e.g. RAS, LPS)")
            options["orientation"] = codes
        elif key == "cache":
            options["cache"] = Path(value)
        else:
            raise DataError(f"{spec}: unknown option {part!r}; known: spacing=MM, "
                            "orientation=CODES, cache=FOLDER")
    return Path(folder), Options(**options)


@dataclass(frozen=True)
class Layout:
    """What a folder holds before anything is read: (image, mask) file pairs, the split each
    belongs to where the folder says (else None), and the declared class values (MSD)."""

    pairs: tuple[tuple[Path, Path], ...]
    splits: dict[str, tuple[int, ...]] | None
    declared: tuple[int, ...] | None = None


def nifti_layout(spec: str, root: Path) -> Layout:
    """DIR/images + DIR/labels, and DIR/splits.json if there is one."""
    folder, masks = root / "images", root / "labels"
    if not folder.is_dir():
        raise DataError(f"{spec}: no folder {folder} (expected DIR/images/*.nii.gz and "
                        "DIR/labels/ or DIR/labels.csv)")
    files = sorted(p for p in folder.iterdir() if p.name.endswith(SUFFIXES))
    if not files:
        raise DataError(f"{spec}: no NIfTI images (*.nii.gz, *.nii) in {folder}")
    pairs = []
    for image in files:
        mask = next((masks / (stem(image) + s) for s in SUFFIXES
                     if (masks / (stem(image) + s)).is_file()), None)
        if mask is None:
            raise DataError(f"{spec}: no mask in {masks} for image {image.name}")
        pairs.append((image, mask))
    table = root / "splits.json"
    if not table.is_file():
        return Layout(tuple(pairs), None)
    try:
        named = json.loads(table.read_text())
        index = {image.name: i for i, (image, _) in enumerate(pairs)}
        splits = {s: tuple(index[name] for name in named[s]) for s in SPLITS}
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{spec}: {table}: needs lists 'train', 'val' and 'test' of file names "
                        f"in images/ ({type(exc).__name__}: {exc})") from None
    return Layout(tuple(pairs), splits)


def msd_layout(spec: str, root: Path) -> Layout:
    """The Decathlon's dataset.json: ``labels`` (value -> name) and ``training`` pairs; its
    ``test`` images have no masks, so the labelled pairs are split."""
    table = root / "dataset.json"
    if not table.is_file():
        raise DataError(f"{spec}: no {table} (the Medical Segmentation Decathlon layout: "
                        "dataset.json, imagesTr/, labelsTr/)")
    try:
        meta = json.loads(table.read_text())
        declared = tuple(sorted(int(k) for k in meta["labels"]))
        pairs = tuple((root / item["image"], root / item["label"]) for item in meta["training"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{spec}: {table}: needs 'labels' (class value -> name) and 'training' "
                        f"(a list of {{image, label}}) ({type(exc).__name__}: {exc})") from None
    if not pairs:
        raise DataError(f"{spec}: {table} lists no training pairs")
    for pair in pairs:
        for path in pair:
            if not path.is_file():
                raise DataError(f"{spec}: {table} names {path.relative_to(root)}, which is "
                                "not there")
    return Layout(pairs, None, declared)


@dataclass(frozen=True)
class Volumes:
    """A segmentation dataset on disk: per split, MONAI items ({"image", "label"}: paths of the
    original files) whose preprocessed volumes sit in ``cache``. ``shapes`` are the volumes'
    (D, H, W) after preprocessing; ``did`` says in one line what the preprocessing did."""

    name: str
    items: dict[str, tuple[dict[str, str], ...]]
    shapes: dict[str, tuple[tuple[int, int, int], ...]]
    num_classes: int
    channels: int
    options: Options
    spacing: tuple[float, float, float]
    cache: Path
    did: str

    task = "segmentation"
    masks = True

    @property
    def smallest(self) -> tuple[int, int, int]:
        """The smallest extent along each axis of any volume: the largest patch that fits."""
        every = [s for shapes in self.shapes.values() for s in shapes]
        return tuple(min(s[a] for s in every) for a in range(3))  # type: ignore[return-value]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, D, H, W) the cost metrics are measured on: the smallest volume's extents."""
        return (self.channels, *self.smallest)

    @property
    def split_sizes(self) -> tuple[int, int, int]:
        return tuple(len(self.items[s]) for s in SPLITS)  # type: ignore[return-value]

    def summary(self) -> str:
        train, val, test = self.split_sizes
        return (f"{self.name}: {train} train / {val} val / {test} test volumes, "
                f"{self.channels} channel(s), {self.num_classes} classes; {self.did}")

    def preprocess(self) -> Any:
        """The deterministic transforms (cached on disk by ``PersistentDataset``)."""
        return preprocessing(self.name, self.options.orientation, self.spacing, None)

    def dataset(self, split: str | tuple[str, ...], random: Any = None) -> Any:
        """The split (or splits, one after the other) as a MONAI ``PersistentDataset`` read
        from the cache, with ``random`` (a MONAI transform) applied after loading."""
        splits = (split,) if isinstance(split, str) else split
        items = [item for s in splits for item in self.items[s]]
        chain = [*self.preprocess().transforms, *([random] if random is not None else [])]
        return PersistentDataset(items, t.Compose(chain), cache_dir=self.cache)

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The whole split in memory, for an estimator that needs it at once (DARTS): images
        (N, C, D, H, W) float32 and masks (N, D, H, W) int64; its volumes must be of one
        shape."""
        shapes = set(self.shapes[split])
        if len(shapes) > 1:
            raise DataError(f"{self.name}: the {split} volumes differ in shape "
                            f"({sorted(shapes)[:2]}); this strategy holds a split at once and "
                            "needs one shape: use a strategy that trains each network")
        loaded = [self.dataset(split)[i] for i in range(len(self.items[split]))]
        return (np.stack([v["image"].numpy() for v in loaded]),
                np.stack([v["label"][0].numpy().astype(np.int64) for v in loaded]))

    # Whole-split arrays under the names of ``raynas.data.Dataset`` (weight-sharing estimators).
    x_train = property(lambda self: self.arrays("train")[0])
    y_train = property(lambda self: self.arrays("train")[1])
    x_val = property(lambda self: self.arrays("val")[0])
    y_val = property(lambda self: self.arrays("val")[1])
    x_test = property(lambda self: self.arrays("test")[0])
    y_test = property(lambda self: self.arrays("test")[1])


def _nonzero(x: Any) -> Any:
    """The foreground the crop keeps: voxels brighter than the volume's darkest (CT's air is
    negative, MRI's background zero)."""
    return x > x.min()


class _CheckGrid(t.Transform):
    """After resampling, a mask must lie on its image's grid and hold class values."""

    def __init__(self, spec: str, declared: tuple[int, ...] | None) -> None:
        self.spec, self.declared = spec, declared

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        image, label = item["image"], item["label"]
        name = Path(str(image.meta.get("filename_or_obj", "?"))).name
        mask = Path(str(label.meta.get("filename_or_obj", "?"))).name
        if image.shape[1:] != label.shape[1:]:
            raise DataError(f"{self.spec}: mask {mask} is {tuple(label.shape[1:])} after "
                            f"resampling, its image {name} {tuple(image.shape[1:])}; a mask "
                            "must match its image voxel for voxel")
        if label.shape[0] != 1:
            raise DataError(f"{self.spec}: mask {mask} has {label.shape[0]} channels; a mask is "
                            "one 3-D volume of class values")
        values = torch.unique(label.as_tensor())
        if torch.any(values != values.round()) or values.min() < 0 or values.max() > 255:
            raise DataError(f"{self.spec}: mask {mask} holds values that are not class numbers "
                            "(integers 0-255)")
        if self.declared is not None:
            extra = sorted(set(int(v) for v in values) - set(self.declared))
            if extra:
                raise DataError(f"{self.spec}: mask {mask} holds class {extra[0]}, which "
                                f"dataset.json does not declare (labels: {list(self.declared)})")
        return item


def preprocessing(spec: str, orientation: str, spacing: tuple[float, float, float],
                  declared: tuple[int, ...] | None) -> Any:
    """Load, reorient, resample, check, crop to the foreground, normalise, store compactly."""
    return t.Compose([
        t.LoadImaged(KEYS, image_only=True),
        t.EnsureChannelFirstd(KEYS),
        t.Orientationd(KEYS, axcodes=orientation, labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        t.Spacingd(KEYS, pixdim=spacing, mode=("bilinear", "nearest")),
        _CheckGrid(spec, declared),
        t.CropForegroundd(KEYS, source_key="image", select_fn=_nonzero, allow_smaller=True),
        t.NormalizeIntensityd("image", channel_wise=True),
        t.CastToTyped(KEYS, dtype=(np.float32, np.uint8)),
        t.EnsureTyped(KEYS, track_meta=False),
    ])


def _spacing(spec: str, layout: Layout, options: Options) -> tuple[float, float, float]:
    """The user's spacing, or the median of the images' spacings in the target orientation
    (read from the headers only)."""
    if options.spacing is not None:
        return options.spacing
    nib = nibabel_for(spec)
    target = nib.orientations.axcodes2ornt(tuple(options.orientation))
    every = []
    for image, _ in layout.pairs:
        try:
            header = nib.load(image)
        except Exception as exc:  # nibabel's ImageFileError, gzip and OS errors alike
            raise DataError(f"{spec}: cannot read {image} as NIfTI ({exc})") from None
        if len(header.shape) not in (3, 4):
            raise DataError(f"{spec}: {image.name} is {len(header.shape)}-D {header.shape}; "
                            "images must be 3-D volumes (D, H, W) or 4-D with channels last "
                            "(D, H, W, C)")
        moved = nib.orientations.ornt_transform(nib.io_orientation(header.affine), target)
        zooms = header.header.get_zooms()[:3]
        spacing = [0.0] * 3
        for axis, (to, _) in enumerate(moved):
            spacing[int(to)] = float(zooms[axis])
        every.append(spacing)
    return tuple(round(statistics.median(s[a] for s in every), 4)  # type: ignore[return-value]
                 for a in range(3))


def _split(spec: str, layout: Layout, seed: int) -> dict[str, tuple[int, ...]]:
    if layout.splits is not None:
        return layout.splits
    order = list(range(len(layout.pairs)))
    random.Random(seed).shuffle(order)
    test = max(1, round(FRACTIONS[2] * len(order)))
    val = max(1, round(FRACTIONS[1] * len(order)))
    if len(order) - test - val < 1:
        raise DataError(f"{spec}: {len(order)} volumes cannot be split into train, val and test")
    return {"test": tuple(order[:test]), "val": tuple(order[test:test + val]),
            "train": tuple(order[test + val:])}


def _key(layout: Layout, spacing: Any, options: Options, declared: Any) -> str:
    """A cache folder's name: the files (path, size, time), the options and VERSION."""
    parts = [VERSION, spacing, options.orientation, declared]
    for pair in layout.pairs:
        for path in pair:
            stat = path.stat()
            parts.append((str(path.resolve()), stat.st_size, stat.st_mtime_ns))
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:20]


def load_volumes(spec: str, root: Path, layout: Layout, options: Options, seed: int) -> Volumes:
    """Check and preprocess every volume once into the cache (or find them there), then the
    splits as ``Volumes``."""
    spacing = _spacing(spec, layout, options)
    splits = _split(spec, layout, seed)
    folder = options.cache / _key(layout, spacing, options, layout.declared)
    items = [{"image": str(image), "label": str(mask)} for image, mask in layout.pairs]
    summary = folder / "volumes.json"
    if not summary.is_file():
        _build(spec, folder, items, options, spacing, layout.declared)
    meta = json.loads(summary.read_text())
    shapes = [tuple(s) for s in meta["shapes"]]
    nib = nibabel_for(spec)
    raw = {tuple(float(z) for z in nib.load(p[0]).header.get_zooms()[:3]) for p in layout.pairs}
    given = "" if options.spacing is None else "given"
    did = (f"resampled {len(raw)} spacing(s) to {'x'.join(f'{s:g}' for s in spacing)} mm "
           f"({given or 'the median'}), {options.orientation}, cropped to the foreground "
           f"(sizes {_range(shapes)}), z-scored per volume, masks uint8, cached in {folder}")
    return Volumes(spec, {s: tuple(items[i] for i in splits[s]) for s in SPLITS},
                   {s: tuple(shapes[i] for i in splits[s]) for s in SPLITS},
                   meta["classes"], meta["channels"], options, spacing, folder, did)


def _range(shapes: list[tuple[int, ...]]) -> str:
    small = "x".join(str(min(s[a] for s in shapes)) for a in range(3))
    large = "x".join(str(max(s[a] for s in shapes)) for a in range(3))
    return small if small == large else f"{small} to {large}"


def _build(spec: str, folder: Path, items: list[dict[str, str]], options: Options,
           spacing: tuple[float, float, float], declared: tuple[int, ...] | None) -> None:
    """Preprocess the volumes one at a time into a temporary folder beside ``folder`` (checking
    each), and rename it to ``folder`` when all passed; nothing stays behind on bad input."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        dataset = PersistentDataset(items, preprocessing(spec, options.orientation, spacing,
                                                         declared), cache_dir=partial)
        shapes, top, channels = [], 0, set()
        for i in range(len(items)):
            try:
                volume = dataset[i]
            except DataError:
                raise
            except Exception as exc:  # MONAI wraps a reader's error in a RuntimeError
                cause = exc.__cause__ or exc
                raise DataError(f"{spec}: cannot read {Path(items[i]['image']).name} or its "
                                f"mask ({type(cause).__name__}: {str(cause).splitlines()[0]})"
                                ) from None
            shapes.append(tuple(volume["image"].shape[1:]))
            channels.add(volume["image"].shape[0])
            top = max(top, int(volume["label"].max()))
        if len(channels) > 1:
            raise DataError(f"{spec}: the images have different numbers of channels "
                            f"({sorted(channels)})")
        if top < 1:
            raise DataError(f"{spec}: the masks are all background (class 0); nothing to "
                            "segment")
        classes = top + 1 if declared is None else max(declared) + 1
        (partial / "volumes.json").write_text(json.dumps(
            {"shapes": shapes, "classes": classes, "channels": channels.pop()}))
        # Another process may have built the same folder meanwhile: keep its copy.
        with contextlib.suppress(OSError):
            partial.rename(folder)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)


def load_nifti(spec: str, argument: str, seed: int) -> Any:
    """The ``nifti:DIR`` source: masks in DIR/labels -> ``Volumes``; a DIR/labels.csv (a class
    per volume) -> a classification ``Dataset`` of arrays."""
    root, options = parse(spec, argument)
    if not root.is_dir():
        raise DataError(f"{spec}: directory not found: {root}")
    if not (root / "labels").is_dir() and (root / "labels.csv").is_file():
        return split_arrays(spec, read_labelled(spec, root), seed)
    if not (root / "labels").is_dir() and (root / "images").is_dir():
        raise DataError(f"{spec}: neither {root / 'labels'}/ (segmentation masks) nor "
                        f"{root / 'labels.csv'} (classification labels)")
    return load_volumes(spec, root, nifti_layout(spec, root), options, seed)


def load_msd(spec: str, argument: str, seed: int) -> Volumes:
    """The ``msd:DIR`` source: a Medical Segmentation Decathlon folder."""
    root, options = parse(spec, argument)
    if not root.is_dir():
        raise DataError(f"{spec}: directory not found: {root}")
    return load_volumes(spec, root, msd_layout(spec, root), options, seed)
