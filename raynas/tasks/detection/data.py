"""Object detection data: the ``coco:DIR`` dataset, and demo data to try it on.

``coco:DIR`` reads one COCO annotation file, ``DIR/annotations.json`` (``images``,
``annotations`` with ``bbox`` as ``[x, y, width, height]`` in pixels, ``categories``), and the
images it names, at ``DIR/images/<file_name>``; or COCO's own layout,
``DIR/annotations/instances_train*.json`` with its images in ``DIR/train*/`` and, if present,
``DIR/annotations/instances_val*.json`` with ``DIR/val*/``, whose images are then the held-out
test split (COCO's val2017 is what papers report on; its test-dev has no public labels).
Crowd annotations (``iscrowd: 1``) are kept as ignore regions: left out of training, and in
the evaluation a detection on one counts neither way, as COCO defines them; images without
annotations stay in as negatives. Everything is checked when the
file is read, so bad input fails at once with one line: a missing image (the first is named),
one that is no image or not of its recorded size, a box outside its image or of no area (its
annotation id), an annotation of an unknown image or category, no annotations at all, malformed
JSON.

Images are read from disk one at a time by a ``torch.utils.data.Dataset``, as torchvision's
detection models take them: a float image (C, H, W) in [0, 1] and a target with ``boxes`` (a
``tv_tensors.BoundingBoxes`` in XYXY pixels) and ``labels`` (1..K; 0 is the background the
torchvision detectors reserve). The training split is augmented with box-aware transforms v2
(flip, photometric distortion, then ``SanitizeBoundingBoxes``). The splits are by image, seeded.

The annotation file is read with ``json`` rather than pycocotools' ``COCO`` (or torchvision's
``CocoDetection``, which needs it): raynas must check every record and say which one is wrong,
and the index needed is a dict.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torchvision import tv_tensors
from torchvision.transforms import v2

from raynas.errors import DataError
from raynas.tasks.detection.boxes import (
    TOLERANCE,
    Annotated,
    Picture,
    Tiling,
    image_size,
    picture,
    tiles,
)
from raynas.tasks.detection.formats import read_csv, read_voc

ANNOTATIONS = "annotations.json"
IMAGES = "images"
#: COCO's own layout's folder of ``instances_<split>.json`` files (images in ``DIR/<split>/``).
INSTANCES = "annotations"
SHAPES = ("square", "circle", "triangle")
#: The share of ``write_synthetic``'s images that its ``instances`` layout puts in the val file.
HELD_OUT = 0.15


def read_coco(spec: str) -> Annotated:
    """Read and check ``coco:DIR``, either layout; a one-line ``DataError`` names what is
    wrong."""
    kind, _, rest = spec.partition(":")
    if kind != "coco" or not rest:
        raise DataError(f"{spec}: a detection dataset is coco:DIR (DIR/{ANNOTATIONS} and "
                        f"DIR/{IMAGES}/, or DIR/{INSTANCES}/instances_train*.json and "
                        "DIR/train*/)")
    root = Path(rest).expanduser().absolute()  # trials read the images from other folders
    if not root.is_dir():
        raise DataError(f"{spec}: directory not found: {root}")
    train, val = _layout(spec, root)
    pictures, categories = _read_file(spec, *train)
    held_out: tuple[Picture, ...] = ()
    if val is not None:
        held_out, val_categories = _read_file(spec, *val)
        if val_categories != categories:
            raise DataError(f"{spec}: {val[0].name} and {train[0].name} list different "
                            f"categories ({val_categories} and {categories})")
    return Annotated(spec, pictures, ("background", *(categories[c] for c in sorted(categories))),
                held_out)


def _layout(spec: str, root: Path) -> tuple[tuple[Path, Path], tuple[Path, Path] | None]:
    """The (annotation file, image folder) of the training images, and of COCO's val file if
    there is one: ``DIR/annotations.json`` and ``DIR/images/``, or COCO's
    ``DIR/annotations/instances_train*.json`` and ``DIR/train*/`` (the folder named as the file,
    less ``instances_``), with ``instances_val*.json`` and ``DIR/val*/`` if present."""
    single = root / ANNOTATIONS
    found = {split: sorted((root / INSTANCES).glob(f"instances_{split}*.json"))
             for split in ("train", "val")}
    for split, files in found.items():
        if len(files) > 1:
            raise DataError(f"{spec}: {len(files)} {split} files in {root / INSTANCES} "
                            f"({', '.join(f.name for f in files)}); keep one")
    if single.is_file() and (found["train"] or found["val"]):
        other = (found["train"] or found["val"])[0]
        raise DataError(f"{spec}: both {single} and {other}: keep one layout")
    if single.is_file():
        return (single, root / IMAGES), None
    if not found["train"]:
        if found["val"]:
            raise DataError(f"{spec}: {found['val'][0]} but no instances_train*.json beside it "
                            "to train on")
        raise DataError(f"{spec}: no {single} (expected DIR/{ANNOTATIONS} in COCO format and the "
                        f"images in DIR/{IMAGES}/, or COCO's DIR/{INSTANCES}/instances_train*.json "
                        "and DIR/train*/)")
    pairs = []
    for files in found.values():
        for file in files:
            folder = root / file.stem.removeprefix("instances_")
            if not folder.is_dir():
                raise DataError(f"{spec}: no image folder {folder}/ for {file.name}")
            pairs.append((file, folder))
    return pairs[0], pairs[1] if len(pairs) > 1 else None


def _read_file(spec: str, file: Path, folder: Path
               ) -> tuple[tuple[Picture, ...], dict[int, str]]:
    """The checked pictures of one COCO annotation file, their images in ``folder``, and its
    categories (id: name); labels are 1..K in the order of the category ids."""
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{spec}: malformed JSON in {file} ({exc})") from None
    if not isinstance(doc, dict) or any(not isinstance(doc.get(k), list)
                                        for k in ("images", "annotations", "categories")):
        raise DataError(f"{spec}: {file} needs lists 'images', 'annotations' and 'categories'")

    def field(record: Any, key: str, kind: type | tuple[type, ...], what: str) -> Any:
        value = record.get(key) if isinstance(record, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise DataError(f"{spec}: {what} has no valid {key!r} (got {value!r})")
        return value

    categories = {}
    for c in doc["categories"]:
        categories[field(c, "id", int, "a category")] = field(c, "name", str, "a category")
    if not categories:
        raise DataError(f"{spec}: {file} has no categories")
    label = {cid: k for k, cid in enumerate(sorted(categories), start=1)}
    images = {}
    for im in doc["images"]:
        iid = field(im, "id", int, "an image")
        what = f"image {iid}"
        images[iid] = (field(im, "file_name", str, what), field(im, "width", int, what),
                       field(im, "height", int, what))
    if not doc["annotations"]:
        raise DataError(f"{spec}: {file} has no annotations")
    boxes: dict[int, list[tuple[tuple[float, float, float, float], int, bool]]] = {
        i: [] for i in images}
    for a in doc["annotations"]:
        aid = field(a, "id", int, "an annotation")
        what = f"annotation {aid}"
        iid, cid = field(a, "image_id", int, what), field(a, "category_id", int, what)
        if iid not in images:
            raise DataError(f"{spec}: {what} is of image {iid}, which {file} does not list")
        if cid not in categories:
            raise DataError(f"{spec}: {what} has category {cid}, which {file} does not list")
        bbox = field(a, "bbox", list, what)
        if len(bbox) != 4 or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                     and math.isfinite(v) for v in bbox):
            raise DataError(f"{spec}: {what}: bbox must be 4 numbers [x, y, width, height], "
                            f"got {bbox!r}")
        x, y, w, h = bbox
        _, width, height = images[iid]
        if w <= 0 or h <= 0:
            raise DataError(f"{spec}: {what}: box {bbox} has no area")
        if x < -TOLERANCE or y < -TOLERANCE or x + w > width + TOLERANCE or (
                y + h > height + TOLERANCE):
            raise DataError(f"{spec}: {what}: box {bbox} is out of the bounds of image {iid} "
                            f"({width}x{height})")
        boxes[iid].append(((max(0.0, x), max(0.0, y), min(float(width), x + w),
                            min(float(height), y + h)), label[cid], bool(a.get("iscrowd"))))
    if not any(not crowd for found in boxes.values() for _, _, crowd in found):
        raise DataError(f"{spec}: {file} has only crowd annotations; nothing to detect")
    pictures = []
    for iid, (name, width, height) in sorted(images.items()):
        path = folder / name
        if not path.is_file():
            missing = sum(not (folder / n).is_file() for n, _, _ in images.values())
            raise DataError(f"{spec}: image file not found: {path} ({missing} of {len(images)} "
                            "images are missing)")
        size = image_size(spec, path)
        if size != (width, height):
            raise DataError(f"{spec}: {path.name} is {size[0]}x{size[1]}, image {iid} in "
                            f"{file} says {width}x{height}")
        pictures.append(picture(path, width, height, boxes[iid]))
    return tuple(pictures), categories


@lru_cache(maxsize=4)
def _decoded(path: Path) -> Image.Image:
    """An image file decoded to RGB. The last few are kept (per loader process): the tiles of
    one large image, each a crop, would otherwise decode the whole file again."""
    with Image.open(path) as file:
        return file.convert("RGB")


class Detections:
    """A ``torch.utils.data.Dataset`` of pictures: (image, target) pairs read from disk, through
    ``transform`` (a transforms v2 pipeline taking and giving both). A target holds ``boxes``,
    ``labels`` and ``iscrowd`` (ignore regions, which training leaves out). ``window``: the
    pictures are whole images that a model trained on tiles of that size sees through a
    sliding window (``raynas.tasks.detection.tiles``)."""

    def __init__(self, spec: str, pictures: tuple[Picture, ...],
                 transform: Callable[..., Any], window: Tiling | None = None) -> None:
        self.spec, self.pictures, self.transform = spec, pictures, transform
        self.window = window

    def __len__(self) -> int:
        return len(self.pictures)

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        p = self.pictures[index]
        try:  # PIL: torchvision.io's decoders are deprecated from torchvision 0.29 on
            image = _decoded(p.path)
        except OSError as exc:  # PIL's UnidentifiedImageError is one
            raise DataError(f"{self.spec}: cannot read {p.path} as an image ({exc})") from None
        if image.size != (p.width, p.height) or p.origin != (0, 0):  # a tile; PIL pads with 0
            x, y = p.origin
            image = image.crop((x, y, x + p.width, y + p.height))
        target = {"boxes": tv_tensors.BoundingBoxes(
                      torch.tensor(p.boxes, dtype=torch.float32).reshape(-1, 4),
                      format="XYXY", canvas_size=(p.height, p.width)),
                  "labels": torch.tensor(p.labels, dtype=torch.int64),
                  "iscrowd": torch.tensor(p.crowd_flags, dtype=torch.bool)}
        return self.transform(tv_tensors.Image(image), target)


def transforms(train: bool) -> Callable[..., Any]:
    """Box-aware transforms v2: augmentation for training, then float images in [0, 1]; boxes
    that a transform pushes out or shrinks to nothing are dropped with their labels."""
    augment = [v2.RandomHorizontalFlip(), v2.RandomPhotometricDistort(p=0.5)] if train else []
    return v2.Compose([*augment, v2.ToDtype(torch.float32, scale=True),
                       v2.SanitizeBoundingBoxes(labels_getter=_per_box)])


def _per_box(inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``SanitizeBoundingBoxes`` drops with a box: its label and crowd flag."""
    target = inputs[1]
    return target["labels"], target["iscrowd"]


def collate(batch: list[tuple[Any, dict[str, Any]]]) -> tuple[list[Any], list[dict[str, Any]]]:
    """A batch as torchvision's detectors take it: a list of images and a list of targets
    (images may differ in size, boxes in number, so nothing is stacked)."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


@dataclass(frozen=True)
class DetectionData:
    """``coco:DIR`` split by image into train / val / test ``Detections``."""

    name: str
    train: Detections
    val: Detections
    test: Detections
    classes: tuple[str, ...]
    #: Training on tiles (``?tile=N``): the training and validation pictures are tiles.
    tiling: Tiling | None = None

    task = "detection"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        """The largest (height, width) of the training images (the tile's, on tiles)."""
        pictures = self.train.pictures
        return max(p.height for p in pictures), max(p.width for p in pictures)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of a model's input, as the cost metrics measure it: RGB at
        ``image_size``."""
        return (3, *self.image_size)

    @property
    def split_sizes(self) -> tuple[int, int, int]:
        """Images in train, val and test."""
        return len(self.train), len(self.val), len(self.test)

    def summary(self) -> str:
        unit = f" tiles of {self.tiling.size}px," if self.tiling else " /"
        return (f"{self.name}: {len(self.train)} train / {len(self.val)} val{unit} "
                f"{len(self.test)} test images, {self.num_classes - 1} classes")


#: ``SPEC?tile=N``: train on tiles of N pixels, test through a sliding window of them.
TILE = re.compile(r"\?tile=(\d+)$")
#: The smallest tile: the detectors' deepest levels (stride 32) need a few cells.
MIN_TILE = 64


def read_boxes(spec: str) -> tuple[Annotated, Tiling | None]:
    """The checked dataset of ``coco:DIR``, ``voc:DIR`` or ``csv:FILE``, and the tiling that
    a ``?tile=N`` suffix asks for."""
    base, tiling = spec, None
    if found := TILE.search(spec):
        base, tiling = spec[:found.start()], Tiling(int(found.group(1)))
    kind = base.partition(":")[0]
    if kind not in READERS:
        raise DataError(f"{spec}: a detection dataset is {', '.join(f'{k}:...' for k in READERS)}"
                        ", optionally with ?tile=N")
    annotated = READERS[kind](base)
    if tiling is not None:
        every = (*annotated.pictures, *annotated.held_out)
        largest = max(every, key=lambda p: p.width * p.height)
        if tiling.size < MIN_TILE:
            raise DataError(f"{spec}: tile size {tiling.size} is under {MIN_TILE} pixels")
        if all(tiling.size > max(p.width, p.height) for p in every):
            raise DataError(f"{spec}: tile size {tiling.size} is larger than every image (the "
                            f"largest is {largest.width}x{largest.height}); use a smaller one "
                            "or leave ?tile out")
    return annotated, tiling


def load_detection(spec: str, seed: int = 0, val_fraction: float = 0.15,
                   test_fraction: float = 0.15) -> DetectionData:
    """Read a dataset of boxes and split its images at random (seeded); only the training split
    is augmented. Where the files set images aside (COCO's val file, VOC's ``test.txt``), those
    are the test split (``test_fraction`` is not used). With ``?tile=N``, the images left
    after the test split are cut into tiles (``boxes.tiles``), which are split into train and
    val; the test images stay whole, and are scored through a sliding window."""
    found, tiling = read_boxes(spec)
    order = list(found.pictures)
    random.Random(seed).shuffle(order)
    n_test = 0 if found.held_out else round(len(order) * test_fraction)
    test, rest = found.held_out or tuple(order[:n_test]), order[n_test:]
    if tiling is not None:
        rest = [t for p in rest for t in tiles(p, tiling)]
        random.Random(seed).shuffle(rest)
    n_val = round(len(rest if tiling else order) * val_fraction)
    if len(rest) - n_val < 1 or min(n_val, len(test)) < 1:
        raise DataError(
            f"{spec}: cannot split {len(rest)} tiles into train and val ({val_fraction:.0%} "
            "val)" if tiling and len(test) else
            f"{spec}: cannot split the train file's {len(order)} images into train and val "
            f"({val_fraction:.0%} val)" if found.held_out else
            f"{spec}: cannot split {len(order)} images into train, val and test "
            f"({val_fraction:.0%} val, {test_fraction:.0%} test)")
    val, train = rest[:n_val], rest[n_val:]
    return DetectionData(spec, Detections(spec, tuple(train), transforms(True)),
                         Detections(spec, tuple(val), transforms(False)),
                         Detections(spec, tuple(test), transforms(False), tiling),
                         found.classes, tiling)


def load(spec: str, argument: str, seed: int) -> DetectionData:
    """The ``coco:``, ``voc:`` and ``csv:`` sources (``raynas.data.Source``)."""
    return load_detection(spec, seed)


READERS = {"coco": read_coco, "voc": read_voc, "csv": read_csv}


def write_synthetic(root: Path, count: int = 300, size: int = 64, seed: int = 0,
                    layout: Literal["single", "instances"] = "single") -> Path:
    """``count`` PNG images of ``size``^2 pixels, each with 1-3 shapes (square, circle,
    triangle: one class each) in random colours on a smoothed random-noise texture, and their
    boxes: demo data for ``coco:ROOT``. ``layout`` ``single`` writes ``root/annotations.json``
    and ``root/images/``; ``instances`` writes COCO's layout, the last ``HELD_OUT`` of the
    images in ``root/annotations/instances_val.json`` and ``root/val/``, the others in
    ``instances_train.json`` and ``root/train/`` (image and annotation ids unique across
    both, as in COCO)."""
    if layout == "single":
        parts = [(root / ANNOTATIONS, root / IMAGES)]
        n_train = count
    else:
        parts = [(root / INSTANCES / f"instances_{split}.json", root / split)
                 for split in ("train", "val")]
        n_train = count - round(count * HELD_OUT)
    for file, folder in parts:
        file.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    docs: list[dict[str, list[Any]]] = [{"images": [], "annotations": []} for _ in parts]
    n_annotations = 0
    for i in range(count):
        part = int(i >= n_train)
        texture = noise.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
        canvas = Image.fromarray(texture).resize((size, size), Image.Resampling.BILINEAR)
        canvas = canvas.filter(ImageFilter.GaussianBlur(1))
        draw = ImageDraw.Draw(canvas)
        taken: list[tuple[int, int, int, int]] = []
        for _ in range(rng.randint(1, 3)):
            box = _free_box(rng, size, taken)
            if box is None:
                continue
            taken.append(box)
            kind = rng.randrange(len(SHAPES))
            colour = tuple(rng.randrange(256) for _ in range(3))
            x0, y0, x1, y1 = box
            if SHAPES[kind] == "square":
                draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=colour)
            elif SHAPES[kind] == "circle":
                draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=colour)
            else:
                draw.polygon(((x0, y1 - 1), (x1 - 1, y1 - 1), ((x0 + x1 - 1) / 2, y0)),
                             fill=colour)
            n_annotations += 1
            docs[part]["annotations"].append({
                "id": n_annotations, "image_id": i + 1, "category_id": kind + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                "iscrowd": 0})
        name = f"img{i:04d}.png"
        canvas.save(parts[part][1] / name)
        docs[part]["images"].append({"id": i + 1, "file_name": name, "width": size,
                                     "height": size})
    categories = [{"id": k + 1, "name": s} for k, s in enumerate(SHAPES)]
    for (file, _), doc in zip(parts, docs, strict=True):
        file.write_text(json.dumps({**doc, "categories": categories}))
    return root


def _free_box(rng: random.Random, size: int, taken: list[tuple[int, int, int, int]]
              ) -> tuple[int, int, int, int] | None:
    """A square box of a quarter to a half of the image that overlaps no box in ``taken``, or
    None after a few tries (the image then holds fewer shapes)."""
    for _ in range(20):
        side = rng.randint(size // 4, size // 2)
        x, y = rng.randint(0, size - side), rng.randint(0, size - side)
        box = (x, y, x + side, y + side)
        if all(box[2] <= t[0] or t[2] <= box[0] or box[3] <= t[1] or t[3] <= box[1]
               for t in taken):
            return box
    return None
