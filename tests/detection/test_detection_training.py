"""A small detector trained for a minute on the demo shapes finds them: its mAP@.5 on the
held-out test images is far above the mean-box baseline's (which sees no pixel), and the
validation mAP is reported every epoch."""

from __future__ import annotations

import math
import random

import pytest

from raynas.errors import ConfigError
from raynas.estimation import load_space
from raynas.tasks.detection.bench import baseline_arch
from raynas.tasks.detection.data import load_detection
from raynas.tasks.detection.train import Detector, MeanBoxes, evaluate

EPOCHS = 8


def test_a_trained_detector_beats_the_mean_box_baseline(shapes):
    data = load_detection(f"coco:{shapes}")
    space = load_space("detection")
    arch = baseline_arch(space)  # the fixed baseline of raynas bench detection
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


def test_a_restored_detector_goes_on_from_its_checkpoint(shapes):
    data = load_detection(f"coco:{shapes}")
    space = load_space("detection")
    arch = baseline_arch(space)
    first = Detector(space, arch, data, 3)
    one = next(first.epochs())
    state = first.state()
    again = Detector(space, arch, data, 3, seed=1)  # other initial weights
    again.load(state)
    assert again.epoch == 1 and all(
        (a == b).all() for a, b in zip(again.model.state_dict().values(),
                                       first.model.state_dict().values(), strict=True))
    assert evaluate(again.model, data.val) == one.scores  # the same weights score the same
    assert [e.epoch for e in again.epochs()] == [2, 3]
