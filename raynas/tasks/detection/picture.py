"""Detections at a glance: a few held-out images with their ground-truth boxes and the boxes the
model predicts, side by side in a grid (a PNG logged beside the final model, so the result can
be seen in the MLflow UI). torchvision's ``draw_bounding_boxes`` draws the boxes and their
labels; matplotlib composes the grid, as ``report.segmentation`` does for slices."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import torch
from matplotlib.figure import Figure
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F
from torchvision.utils import draw_bounding_boxes

#: Pixels of one cell of the grid; images are scaled to ``SIDE`` pixels (their longer side), so
#: that 64x64 images and the labels drawn on them are readable.
PANEL, SIDE, DPI = 224, 192, 100
#: Pixels above the grid for the two lines that tell the colours apart (short enough for one
#: column).
HEADER = 32
COLUMNS = 4
TRUTH, PREDICTED = "lime", "magenta"


def boxes_png(images: Sequence[Any], predictions: Sequence[dict[str, Any]],
              targets: Sequence[dict[str, Any]], classes: Sequence[str],
              score_threshold: float = 0.3) -> bytes:
    """A PNG grid (``COLUMNS`` wide) of ``images`` (float (C, H, W) in [0, 1]), each with its
    ``targets``' boxes in ``TRUTH`` and the ``predictions``' boxes scored at least
    ``score_threshold`` in ``PREDICTED`` (class name and score); boxes are XYXY pixels and
    labels index ``classes`` (0 is the background), as torchvision's detectors give them."""
    columns = min(COLUMNS, len(images))
    rows = math.ceil(len(images) / columns)
    width, height = columns * PANEL, rows * PANEL + HEADER
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    fig.text(0.5, 1 - 4 / height, f"true boxes: {TRUTH}\npredicted, score >= "
             f"{score_threshold:g}: {PREDICTED}", ha="center", va="top", fontsize=8)
    for n, (image, guess, truth) in enumerate(zip(images, predictions, targets, strict=True)):
        boxes, labels, scores = (guess[k].detach().cpu() for k in ("boxes", "labels", "scores"))
        shown = scores >= score_threshold
        drawn = _drawn(image, [(truth["boxes"], truth["labels"], None, TRUTH),
                               (boxes[shown], labels[shown], scores[shown], PREDICTED)], classes)
        row, column = divmod(n, columns)
        # a cell per image, the image drawn 1:1 in its lower SIDE x SIDE, the title above it
        ax = fig.add_axes(((column * PANEL + (PANEL - SIDE) / 2) / width,
                           ((rows - 1 - row) * PANEL + (PANEL - SIDE) / 4) / height,
                           SIDE / width, SIDE / height))
        ax.imshow(drawn.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(f"image {n}: {len(truth['labels'])} true, {int(shown.sum())} predicted",
                     fontsize=8)
        ax.axis("off")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _drawn(image: Any, layers: list[tuple[Any, Any, Any, str]], classes: Sequence[str]) -> Any:
    """``image`` as uint8 (3, h, w), scaled to ``SIDE`` with its pixels kept sharp, with each
    layer's (boxes, labels, scores or None, colour) drawn on it, scaled alike."""
    def plain(x: Any) -> torch.Tensor:  # a CPU tensor, not a tv_tensor nor one with a graph
        return torch.as_tensor(x).detach().cpu().as_subclass(torch.Tensor)

    image = plain(image)
    height, width = image.shape[-2:]
    scale = SIDE / max(height, width)
    image = F.resize(image, [round(height * scale), round(width * scale)],
                     interpolation=InterpolationMode.NEAREST)
    image = F.to_dtype(image, torch.uint8, scale=True)
    for boxes, labels, scores, colour in layers:
        if not len(labels):  # draw_bounding_boxes warns on no boxes
            continue
        names = [classes[int(k)] for k in labels]
        if scores is not None:
            names = [f"{name} {float(s):.2f}" for name, s in zip(names, scores, strict=True)]
        image = draw_bounding_boxes(image, plain(boxes) * scale, names, colors=colour, width=2,
                                    fill_labels=True)
    return image
