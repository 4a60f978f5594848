"""A small detector trained for a minute on the demo shapes finds them: its mAP@.5 on the
held-out test images is far above the mean-box baseline's (which sees no pixel), and the
validation mAP is reported every epoch."""

from __future__ import annotations

import math
import random

import pytest

from raynas.detections import load_detection
from raynas.errors import ConfigError
from raynas.estimation import load_space
from raynas.estimation.detection import Detector, MeanBoxes, evaluate

EPOCHS = 8


def test_a_trained_detector_beats_the_mean_box_baseline(shapes):
    data = load_detection(f"coco:{shapes}")
    space = load_space("detection")
    conv = {"op": "conv_3x3", "connection": "series"}
    arch = space.validate({
        "stem_channels": 16,
        "layers": [{**conv, "channels": 16, "stride": 2}, {**conv, "channels": 32, "stride": 2},
                   {**conv, "channels": 32, "stride": 2, "connection": "skip"}],
        "levels": 2, "neck": "fpn", "neck_channels": 32, "head": "fcos", "anchor_scale": 4,
        "anchor_octaves": 1, "anchor_ratios": "1",
        "train": {"lr": 0.003, "weight_decay": 1e-4, "batch_size": 8, "optimizer": "adam"}})
    detector = Detector(space, arch, data, EPOCHS)
    epochs = list(detector.epochs())
    assert [e.epoch for e in epochs] == list(range(1, EPOCHS + 1))
    assert all(math.isfinite(e.loss) and 0 <= e.scores["map_50"] <= 1 for e in epochs)
    assert epochs[-1].loss < epochs[0].loss
    assert epochs[-1].scores["map_50"] > epochs[0].scores["map_50"]
    baseline = evaluate(MeanBoxes(data.train), data.test)
    trained = evaluate(detector.model, data.test)
    print(f"test mAP@.5: trained {trained['map_50']:.3f}, mean boxes {baseline['map_50']:.3f}; "
          f"mAP@[.5:.95] {trained['map']:.3f} vs {baseline['map']:.3f}")
    assert trained["map_50"] > 0.2 and trained["map_50"] > 5 * baseline["map_50"]
    assert trained["map"] > baseline["map"]


def test_only_a_detection_space_trains_as_a_detector(shapes):
    data = load_detection(f"coco:{shapes}")
    space = load_space("small_cnn")
    with pytest.raises(ConfigError, match=r"--space small_cnn: model 'macro' does not detect "
                                          r"objects; use a detection space \(detection\)"):
        Detector(space, space.sample(random.Random(0)), data, 1)
