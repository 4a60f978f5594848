"""Object detection data: the ``coco:DIR`` dataset, and demo data to try it on.

``coco:DIR`` reads one COCO annotation file, ``DIR/annotations.json`` (``images``,
``annotations`` with ``bbox`` as ``[x, y, width, height]`` in pixels, ``categories``), and the
images it names, at ``DIR/images/<file_name>``; or COCO's own layout,
``DIR/annotations/instances_train*.json`` with its images in ``DIR/train*/`` and, if present,
``DIR/annotations/instances_val*.json`` with ``DIR/val*/``, whose images are then the held-out
test split (COCO's val2017 is what papers report on; its test-dev has no public labels).
Crowd annotations (``iscrowd: 1``) are left out
of the targets; images without annotations stay in as negatives. Everything is checked when the
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torchvision import tv_tensors
from torchvision.transforms import v2

from raynas.errors import DataError

ANNOTATIONS = "annotations.json"
IMAGES = "images"
#: COCO's own layout's folder of ``instances_<split>.json`` files (images in ``DIR/<split>/``).
INSTANCES = "annotations"
#: How far (pixels) a box may stick out of its image: rounding in the tools that write COCO files.
TOLERANCE = 1.0
SHAPES = ("square", "circle", "triangle")
#: The share of ``write_synthetic``'s images that its ``instances`` layout puts in the val file.
HELD_OUT = 0.15


@dataclass(frozen=True)
class Picture:
    """One image of the annotation file with its boxes (XYXY pixels) and labels (1..K)."""

    path: Path
    width: int
    height: int
    boxes: tuple[tuple[float, float, float, float], ...]
    labels: tuple[int, ...]


@dataclass(frozen=True)
class Coco:
    """A checked ``coco:DIR``: its pictures and class names (``classes[0]`` is the
    background). ``pictures`` are those of ``annotations.json`` or of COCO's train file;
    ``held_out`` those of COCO's val file, if there is one (the test split: see
    ``load_detection``)."""

    name: str
    pictures: tuple[Picture, ...]
    classes: tuple[str, ...]
    held_out: tuple[Picture, ...] = ()

    @property
    def num_classes(self) -> int:
        """Classes with the background, as torchvision's detectors count them."""
        return len(self.classes)


def read_coco(spec: str) -> Coco:
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
    return Coco(spec, pictures, ("background", *(categories[c] for c in sorted(categories))),
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
    boxes: dict[int, list[tuple[tuple[float, float, float, float], int]]] = {i: [] for i in images}
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
        if not a.get("iscrowd"):
            boxes[iid].append(((max(0.0, x), max(0.0, y), min(float(width), x + w),
                                min(float(height), y + h)), label[cid]))
    if not any(boxes.values()):
        raise DataError(f"{spec}: {file} has only crowd annotations; nothing to detect")
    pictures = []
    for iid, (name, width, height) in sorted(images.items()):
        path = folder / name
        if not path.is_file():
            missing = sum(not (folder / n).is_file() for n, _, _ in images.values())
            raise DataError(f"{spec}: image file not found: {path} ({missing} of {len(images)} "
                            "images are missing)")
        try:  # the header only: cheap, and it catches what is no image or of another size
            with Image.open(path) as header:
                size = header.size
        except OSError as exc:
            raise DataError(f"{spec}: cannot read {path} as an image ({exc})") from None
        if size != (width, height):
            raise DataError(f"{spec}: {path.name} is {size[0]}x{size[1]}, image {iid} in "
                            f"{file} says {width}x{height}")
        pictures.append(Picture(path, width, height, tuple(b for b, _ in boxes[iid]),
                                tuple(k for _, k in boxes[iid])))
    return tuple(pictures), categories


class Detections:
    """A ``torch.utils.data.Dataset`` of pictures: (image, target) pairs read from disk, through
    ``transform`` (a transforms v2 pipeline taking and giving both)."""

    def __init__(self, spec: str, pictures: tuple[Picture, ...],
                 transform: Callable[..., Any]) -> None:
        self.spec, self.pictures, self.transform = spec, pictures, transform

    def __len__(self) -> int:
        return len(self.pictures)

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        p = self.pictures[index]
        try:  # PIL: torchvision.io's decoders are deprecated from torchvision 0.29 on
            with Image.open(p.path) as file:
                image = file.convert("RGB")
        except OSError as exc:  # PIL's UnidentifiedImageError is one
            raise DataError(f"{self.spec}: cannot read {p.path} as an image ({exc})") from None
        target = {"boxes": tv_tensors.BoundingBoxes(
                      torch.tensor(p.boxes, dtype=torch.float32).reshape(-1, 4),
                      format="XYXY", canvas_size=(p.height, p.width)),
                  "labels": torch.tensor(p.labels, dtype=torch.int64)}
        return self.transform(tv_tensors.Image(image), target)


def transforms(train: bool) -> Callable[..., Any]:
    """Box-aware transforms v2: augmentation for training, then float images in [0, 1]; boxes
    that a transform pushes out or shrinks to nothing are dropped with their labels."""
    augment = [v2.RandomHorizontalFlip(), v2.RandomPhotometricDistort(p=0.5)] if train else []
    return v2.Compose([*augment, v2.ToDtype(torch.float32, scale=True),
                       v2.SanitizeBoundingBoxes()])


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

    task = "detection"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        """The largest (height, width) of the training images."""
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
        return (f"{self.name}: {len(self.train)} train / {len(self.val)} val / "
                f"{len(self.test)} test images, {self.num_classes - 1} classes")


def load_detection(spec: str, seed: int = 0, val_fraction: float = 0.15,
                   test_fraction: float = 0.15) -> DetectionData:
    """Read ``coco:DIR`` and split its images at random (seeded); only the training split is
    augmented. With COCO's val file, its images are the test split (``test_fraction`` is not
    used) and val is ``val_fraction`` of the train file's images."""
    coco = read_coco(spec)
    order = list(coco.pictures)
    random.Random(seed).shuffle(order)
    n_test = 0 if coco.held_out else round(len(order) * test_fraction)
    n_val = round(len(order) * val_fraction)
    if len(order) - n_test - n_val < 1 or min(n_val, n_test or len(coco.held_out)) < 1:
        raise DataError(
            f"{spec}: cannot split the train file's {len(order)} images into train and val "
            f"({val_fraction:.0%} val)" if coco.held_out else
            f"{spec}: cannot split {len(order)} images into train, val and test "
            f"({val_fraction:.0%} val, {test_fraction:.0%} test)")
    test = coco.held_out or tuple(order[:n_test])
    val, train = order[n_test:n_test + n_val], order[n_test + n_val:]
    return DetectionData(spec, Detections(spec, tuple(train), transforms(True)),
                         Detections(spec, tuple(val), transforms(False)),
                         Detections(spec, test, transforms(False)), coco.classes)


def load(spec: str, argument: str, seed: int) -> DetectionData:
    """The ``coco:DIR`` source (``raynas.data.Source``)."""
    return load_detection(spec, seed)


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
