"""The medical ops and models: every op of both medical spaces builds on volumes, keeps or
halves the size as its stride says, and refuses 2-D inputs; the Dice scores are right."""

from __future__ import annotations

import random

import pytest
import torch

from raynas.errors import SpaceError
from raynas.estimation import load_space
from raynas.estimation.problem import CLASSIFICATION, problem_of
from raynas.models import build_model
from raynas.ops import OPS
from raynas.tasks.segmentation.problem import SEGMENTATION

MEDICAL = ("3d_conv_3x3x3", "3d_conv_5x5x5", "3d_max_pool_2x2x2", "3d_avg_pool_2x2x2",
           "attention_gate", "multi_scale_fusion", "skip_connection_3d", "dense_connection_3d")


def test_every_medical_op_is_registered_volumetric_and_in_both_spaces():
    volumetric = {name for name, op in OPS.items() if op.dims == {3}}
    assert set(MEDICAL) == volumetric
    assert set(load_space("medical_3d").values("layers.op")) == set(MEDICAL)
    assert set(load_space("unet3d_seg").values("levels.op")) >= volumetric


@pytest.mark.parametrize("op", MEDICAL)
def test_medical_op_shapes_and_gradients(op):
    x = torch.randn(2, 3, 7, 8, 9, requires_grad=True)
    for stride, size in ((1, (7, 8, 9)), (2, (4, 4, 5))):
        y = OPS[op](3, 5, stride, 3)(x)
        assert y.shape == (2, 5, *size)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_medical_op_refuses_images():
    with pytest.raises(SpaceError, match="need volumes shaped"):
        OPS["attention_gate"](3, 5, 1, 2)


def test_generic_ops_build_3d_too():
    for op in ("conv_3x3", "dw_conv_5x5", "max_pool_3x3", "identity", "zero"):
        assert OPS[op](2, 4, 2, 3)(torch.randn(1, 2, 6, 6, 6)).shape == (1, 4, 3, 3, 3)


@pytest.mark.parametrize(("space", "out"), [("medical_3d", (2, 3)),
                                            ("unet3d_seg", (2, 3, 12, 10, 11))])
def test_sampled_architectures_build_and_run(space, out):
    loaded = load_space(space)
    rng = random.Random(1)
    seen = set()
    for _ in range(8):
        arch = loaded.sample(rng)
        seen.update(level["op"] for level in arch.get("levels", arch.get("layers", [])))
        model = build_model(loaded, arch, (1, 12, 10, 11), 3, width=0.5)
        assert model(torch.randn(2, 1, 12, 10, 11)).shape == out
    assert len(seen) >= 6  # most ops were drawn and built


def test_unet_attention_gates_and_fusion_change_the_network():
    space = load_space("unet3d_seg")
    base = {"levels": [{"op": "3d_conv_3x3x3", "channels": 8}] * 3, "attention": False,
            "fusion": "none", "train": {"lr": 0.01, "batch_size": 4, "optimizer": "adam",
                                        "patch_size": 16}}
    params = {}
    for attention in (False, True):
        for fusion in ("none", "multi_scale"):
            arch = space.validate({**base, "attention": attention, "fusion": fusion})
            model = build_model(space, arch, (1, 16, 16, 16), 2)
            params[attention, fusion] = sum(p.numel() for p in model.parameters())
    assert len(set(params.values())) == 4
    assert problem_of(space) is SEGMENTATION
    assert problem_of(load_space("medical_3d")) is CLASSIFICATION


def test_dice_of_known_predictions():
    target = torch.zeros(2, 4, 4, 4, dtype=torch.long)
    target[:, :2] = 1  # half of each volume is class 1
    target[:, 2:, :2] = 2  # a quarter is class 2
    assert SEGMENTATION.score(target, target, 3)["dice"] == pytest.approx(1.0)
    background = SEGMENTATION.score(torch.zeros_like(target), target, 3)
    assert background["dice"] == pytest.approx(0.0)
    swapped = target.clone()
    swapped[target == 2] = 0  # class 2 missed entirely, class 1 perfect
    scores = SEGMENTATION.score(swapped, target, 3)
    assert scores["dice_class_1"] == pytest.approx(1.0)
    assert scores["dice_class_2"] == pytest.approx(0.0)
    assert scores["accuracy"] == scores["dice"] == pytest.approx(0.5)
