"""The picture of predicted boxes logged beside the final detector: demo images with their
ground-truth boxes and the predicted ones above the score threshold, in a grid of known size."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from raynas.tasks.detection.data import load_detection
from raynas.tasks.detection.picture import COLUMNS, HEADER, PANEL, boxes_png


@pytest.fixture(scope="module")
def shown(shapes):
    data = load_detection(f"coco:{shapes}")
    pairs = [data.test[i] for i in range(6)]
    return [image for image, _ in pairs], [target for _, target in pairs], data.classes


def pixels(png: bytes) -> np.ndarray:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def colour(picture: np.ndarray, rgb: tuple[int, int, int]) -> int:
    """How many pixels are exactly ``rgb`` (box outlines; the blurred textures have none)."""
    return int((picture == rgb).all(axis=-1).sum())


def predicted(targets, score: float, requires_grad: bool = False) -> list[dict]:
    """One box per image, shifted from its first true box by 3 pixels, as a detector gives it
    (still attached to its graph if ``requires_grad``)."""
    out = []
    for t in targets:
        box = torch.tensor(t["boxes"][:1].tolist(), requires_grad=requires_grad) + 3
        out.append({"boxes": box, "labels": t["labels"][:1], "scores": torch.tensor([score])})
    return out


def test_grid_of_the_expected_size(shown):
    images, targets, classes = shown
    none = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
             "scores": torch.zeros(0)} for _ in images]
    for n in (1, 3, 6):
        picture = pixels(boxes_png(images[:n], none[:n], targets[:n], classes))
        columns, rows = min(n, COLUMNS), -(-n // COLUMNS)
        assert picture.shape == (rows * PANEL + HEADER, columns * PANEL, 3)
        assert colour(picture, (0, 255, 0)) > 0  # the true boxes, in lime


def test_predicted_boxes_above_the_threshold_are_drawn(shown):
    images, targets, classes = shown
    without = pixels(boxes_png(images, predicted(targets, 0.0), targets, classes))
    assert colour(without, (255, 0, 255)) == 0
    low = pixels(boxes_png(images, predicted(targets, 0.2), targets, classes))
    assert np.array_equal(low, without)  # below the threshold of 0.3: not drawn
    confident = predicted(targets, 0.9, requires_grad=True)
    picture = pixels(boxes_png(images, confident, targets, classes))
    assert colour(picture, (255, 0, 255)) > 0 and not np.array_equal(picture, without)
    lowered = pixels(boxes_png(images, predicted(targets, 0.2), targets, classes,
                               score_threshold=0.1))
    assert colour(lowered, (255, 0, 255)) > 0  # the same 0.2 boxes, now above the threshold
