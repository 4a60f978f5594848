"""What every box format reads into (``Picture``, ``Annotated``), the checks they share, and
tiles: the overlapping crops a large image is trained on (``tiles``), and the sliding window a
model trained on them sees a whole image through (``windows``, ``merge``).

torchvision has no tiling (torchvision's transforms crop one random window; SAHI and DeepForest
tile, but bring their own detectors and heavy dependencies), so it is written here, with
torchvision's ``batched_nms`` and box operations doing the box work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision.ops import batched_nms, box_area, box_iou

from raynas.errors import DataError

#: How far (pixels) a box may stick out of its image: rounding in the tools that write box files.
TOLERANCE = 1.0
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Picture:
    """One image (or a tile of one) with its boxes (XYXY pixels) and labels (1..K)."""

    path: Path
    width: int
    height: int
    boxes: tuple[tuple[float, float, float, float], ...]
    labels: tuple[int, ...]
    #: Per box, whether it is an ignore region (COCO's ``iscrowd``, VOC's ``difficult``): left
    #: out of training, and in the evaluation a detection on it is neither a hit nor a false
    #: alarm. Empty: no box is.
    crowd: tuple[bool, ...] = ()
    #: Where this picture's pixels start in the image file: a tile (``tiles``) of a larger image
    #: is ``width`` x ``height`` pixels from there; its boxes are in the tile's coordinates.
    origin: tuple[int, int] = (0, 0)

    @property
    def crowd_flags(self) -> tuple[bool, ...]:
        return self.crowd or (False,) * len(self.boxes)


@dataclass(frozen=True)
class Annotated:
    """A checked dataset of boxes (``coco:``, ``voc:``, ``csv:``): its pictures and class
    names (``classes[0]`` is the background). ``held_out`` are the pictures its own files set
    aside for testing (COCO's val file, VOC's ``ImageSets/Main/test.txt``), if any (the test
    split: see ``load_detection``)."""

    name: str
    pictures: tuple[Picture, ...]
    classes: tuple[str, ...]
    held_out: tuple[Picture, ...] = ()

    @property
    def num_classes(self) -> int:
        """Classes with the background, as torchvision's detectors count them."""
        return len(self.classes)


Box = tuple[float, float, float, float]


def image_size(spec: str, path: Path) -> tuple[int, int]:
    """(width, height) from the image file's header only: cheap, and it catches what is no
    image."""
    try:
        with Image.open(path) as header:
            return header.size
    except OSError as exc:  # PIL's UnidentifiedImageError is one
        raise DataError(f"{spec}: cannot read {path} as an image ({exc})") from None


def picture(path: Path, width: int, height: int, found: list[tuple[Box, int, bool]]) -> Picture:
    """A ``Picture`` of (box, label, crowd) triples."""
    return Picture(path, width, height, tuple(b for b, _, _ in found),
                   tuple(k for _, k, _ in found),
                   tuple(c for _, _, c in found) if any(c for _, _, c in found) else ())



@dataclass(frozen=True)
class Tiling:
    """Square tiles of ``size`` pixels, neighbours sharing ``overlap`` of it. A tile keeps a
    box cut by its edge if at least ``keep`` of the box's area is inside (smaller slivers
    would teach the detector half-objects)."""

    size: int
    overlap: float = 0.25
    keep: float = 0.4

    def starts(self, length: int) -> list[int]:
        """Where the tiles along a side of ``length`` pixels start: every ``size * (1 -
        overlap)`` pixels, the last flush with the edge (one tile, padded, if the side is
        shorter than a tile)."""
        if length <= self.size:
            return [0]
        step = max(1, round(self.size * (1 - self.overlap)))
        return [*range(0, length - self.size, step), length - self.size]

    def windows(self, width: int, height: int) -> list[tuple[int, int]]:
        """The (x, y) origins of the tiles that cover a ``width`` x ``height`` image."""
        return [(x, y) for y in self.starts(height) for x in self.starts(width)]


def tiles(p: Picture, tiling: Tiling) -> list[Picture]:
    """``p`` cut into overlapping tiles of ``tiling.size``^2 pixels (past the image's edge, the
    tile is padded with black), each with its boxes clipped to it; a box with less than
    ``tiling.keep`` of its area inside a tile is left out of it."""
    out = []
    boxes = torch.tensor(p.boxes, dtype=torch.float32).reshape(-1, 4)
    areas = box_area(boxes)
    for x, y in tiling.windows(p.width, p.height):
        inside = boxes - torch.tensor([x, y, x, y], dtype=torch.float32)
        inside[:, 0::2] = inside[:, 0::2].clamp(0, min(tiling.size, p.width - x))
        inside[:, 1::2] = inside[:, 1::2].clamp(0, min(tiling.size, p.height - y))
        kept = (box_area(inside) >= tiling.keep * areas) & (box_area(inside) > 0)
        found = [(tuple(b), k, c) for b, k, c, ok in zip(
            inside.tolist(), p.labels, p.crowd_flags, kept.tolist(), strict=True) if ok]
        out.append(replace(picture(p.path, tiling.size, tiling.size, found), origin=(x, y)))
    return out


def merge(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, cut: torch.Tensor,
          iou: float = 0.5, covered: float = 0.5) -> torch.Tensor:
    """Which of the boxes that overlapping windows found (in image coordinates) to keep, by
    descending score. First a box ``cut`` by its window's edge (one inside the image) goes if
    an uncut box of its label covers more than ``covered`` of it: the window beside saw the
    whole object (NMS alone would keep a sliver, whose IoU with the whole box is small, or keep
    the cut box over the whole one). Then torchvision's batched NMS per label at ``iou``."""
    if cut.any():
        overlap = box_iou(boxes[cut], boxes[~cut])
        area = box_area(boxes)
        # box_iou gives I/U; the intersection is I = IoU * (A + B) / (1 + IoU)
        inter = overlap * (area[cut][:, None] + area[~cut][None, :]) / (1 + overlap)
        same = labels[cut][:, None] == labels[~cut][None, :]
        swallowed = ((inter / area[cut][:, None].clamp(min=1e-6) > covered) & same).any(1)
        kept = torch.ones_like(cut)
        kept[cut.nonzero().flatten()[swallowed]] = False
        survivors = kept.nonzero().flatten()
        return survivors[batched_nms(boxes[kept], scores[kept], labels[kept], iou)]
    return batched_nms(boxes, scores, labels, iou)


@torch.no_grad()
def detect_tiled(model: Callable[[list[torch.Tensor]], list[dict[str, torch.Tensor]]],
                 image: torch.Tensor, tiling: Tiling, limit: int, batch: int = 8
                 ) -> dict[str, torch.Tensor]:
    """A whole image's detections by a model trained on tiles: the model sees every window of
    ``tiling`` (padded with black past the edge), its boxes are moved into the image, clipped
    to it and merged (``merge``); the best ``limit`` are kept."""
    _, height, width = image.shape
    s = tiling.size
    origins = tiling.windows(width, height)
    crops = [nn.functional.pad(c, (0, s - c.shape[2], 0, s - c.shape[1]))
             for c in (image[:, y:y + s, x:x + s] for x, y in origins)]
    found: list[dict[str, torch.Tensor]] = []
    for i in range(0, len(crops), batch):
        found += model(crops[i:i + batch])
    boxes, cut = [], []
    for (x, y), f in zip(origins, found, strict=True):
        b = f["boxes"]
        # an edge of the window inside the image, and a box that touches it
        cut.append(((b[:, 0] <= 1) & (x > 0)) | ((b[:, 1] <= 1) & (y > 0))
                   | ((b[:, 2] >= s - 1) & (x + s < width))
                   | ((b[:, 3] >= s - 1) & (y + s < height)))
        boxes.append(b + b.new_tensor([x, y, x, y]))
    every = torch.cat(boxes)
    every[:, 0::2] = every[:, 0::2].clamp(0, width)
    every[:, 1::2] = every[:, 1::2].clamp(0, height)
    scores = torch.cat([f["scores"] for f in found])
    labels = torch.cat([f["labels"] for f in found])
    keep = merge(every, scores, labels, torch.cat(cut))[:limit]
    return {"boxes": every[keep], "scores": scores[keep], "labels": labels[keep]}
