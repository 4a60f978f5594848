"""``BoxMAP``: COCO mAP on torchmetrics' faster-coco-eval backend, on boxes whose IoU with the
truth is known."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from raynas.tasks.detection.metric import BoxMAP

TRUTH = {"boxes": tv_tensors.BoundingBoxes([[10.0, 10.0, 30.0, 30.0]], format="XYXY",
                                           canvas_size=(64, 64)),
         "labels": torch.tensor([1])}


def scores(boxes: list[list[float]], labels: list[int], confidence: list[float] | None = None,
           batches: int = 1) -> dict[str, float]:
    metric = BoxMAP()
    prediction = {"boxes": torch.tensor(boxes).reshape(-1, 4),
                  "scores": torch.tensor(confidence or [0.9] * len(labels)),
                  "labels": torch.tensor(labels, dtype=torch.int64)}
    for _ in range(batches):
        metric.update([prediction], [TRUTH])
    return metric.compute()


def test_a_perfect_box_scores_one():
    assert scores([[10, 10, 30, 30]], [1], batches=3) == {"map": 1.0, "map_50": 1.0,
                                                          "map_75": 1.0}


def test_iou_between_the_thresholds():
    # shifted by 3 pixels: IoU = 17*20 / (2*400 - 17*20) = 0.739, a hit at .5, a miss at .75
    result = scores([[13, 10, 33, 30]], [1])
    assert result["map_50"] == 1.0 and result["map_75"] == 0.0
    # hits at thresholds 0.5, 0.55, ..., 0.7 only: 5 of the 10
    assert result["map"] == pytest.approx(0.5)


def test_wrong_class_and_no_box_score_zero():
    assert scores([[10, 10, 30, 30]], [2])["map_50"] == 0.0
    assert scores([], [])["map_50"] == 0.0


def test_a_confident_false_alarm_ranks_before_the_hit():
    # precision 1/2 at recall 1: COCO's interpolated AP over 101 recall points
    assert scores([[40, 40, 60, 60], [10, 10, 30, 30]], [1, 1], [0.9, 0.5])["map_50"] == (
        pytest.approx(0.5))
