"""The ``detection`` space and builder: every sampled architecture builds as a torchvision
FCOS or RetinaNet that trains and predicts on 64x64 images, levels and anchors follow the
architecture, and what cannot build is refused with one line."""

from __future__ import annotations

import random
import re

import pytest
import torch
from torchvision.models.detection import FCOS, RetinaNet

from raynas.errors import SpaceError
from raynas.estimation import load_space
from raynas.models import build_model

SPACE = load_space("detection")
IMAGES = [torch.rand(3, 64, 64) for _ in range(2)]
TARGETS = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1])},
           {"boxes": torch.tensor([[20.0, 4.0, 36.0, 20.0]]), "labels": torch.tensor([3])}]


def layer(stride: int, connection: str = "series") -> dict:
    return {"op": "conv_3x3", "channels": 16, "stride": stride, "connection": connection}


def test_sampled_architectures_train_and_predict():
    heads = set()
    for seed in range(6):
        arch = SPACE.sample(random.Random(seed))
        model = build_model(SPACE, arch, (3, 64, 64), 4)
        assert isinstance(model, FCOS if arch["head"] == "fcos" else RetinaNet)
        heads.add(arch["head"])
        model.train()
        losses = model(IMAGES, TARGETS)
        total = sum(losses.values())
        assert torch.isfinite(total)
        total.backward()
        assert all(p.grad is not None for p in model.backbone.trunk.stem.parameters())
        model.eval()
        with torch.no_grad():
            out = model(IMAGES)
        assert len(out) == 2 and all(set(o) == {"boxes", "scores", "labels"} for o in out)
        assert min(model.backbone.strides) >= 4
    assert heads == {"fcos", "retinanet"}


def test_levels_and_anchors_follow_the_architecture():
    arch = SPACE.validate({**SPACE.sample(random.Random(0)), "layers": [
        layer(2), layer(2), layer(1, "skip"), layer(2), layer(2, "dense")],
        "levels": 3, "neck": "fpn", "head": "retinanet", "anchor_scale": 2, "anchor_octaves": 3,
        "anchor_ratios": "0.5,1,2"})
    model = build_model(SPACE, arch, (3, 64, 64), 4)
    # scales /2 (x1), /4 (x3: the last at that scale), /8, /16: the deepest three
    assert model.backbone.picks == [3, 4, 5] and model.backbone.strides == [4, 8, 16]
    features = model.backbone(torch.rand(1, 3, 64, 64))
    assert [f.shape[-1] for f in features.values()] == [16, 8, 4]
    anchors = model.anchor_generator
    assert anchors.num_anchors_per_location() == [9, 9, 9]
    assert anchors.sizes[0] == pytest.approx((8.0, 8 * 2 ** (1 / 3), 8 * 2 ** (2 / 3)))
    # FCOS: one anchor a location, anchor_scale times the stride
    fcos = build_model(SPACE, {**arch, "head": "fcos", "neck": "none", "levels": 1}, (3, 64, 64),
                       4)
    assert fcos.anchor_generator.sizes == ((32,),)
    assert fcos.anchor_generator.num_anchors_per_location() == [1]
    # a chain that never reaches stride 4: its last output, max-pooled to it
    flat = build_model(SPACE, {**arch, "layers": [layer(1), layer(2)], "levels": 3},
                       (3, 64, 64), 4)
    assert flat.backbone.strides == [4]
    assert [f.shape[-1] for f in flat.backbone(torch.rand(1, 3, 64, 64)).values()] == [16]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("neck", {"choice": ["fpn", "bifpn"]}, r"space\.neck: unknown value 'bifpn'; known: none, fpn"),
    ("head", "ssd", r"space\.head: unknown value 'ssd'; known: fcos, retinanet"),
    ("neck_channels", {"choice": [32, 40]}, r"space\.neck_channels: .*multiples of 16 .*got 40"),
    ("levels", 0, r"space\.levels: must be integers from 1 to 5, got 0"),
    ("anchor_ratios", {"choice": ["1", "0.5;2"]}, r"space\.anchor_ratios: must be positive "
                                                    r"numbers separated by commas .*'0\.5;2'"),
    ("anchor_scale", -1, r"space\.anchor_scale: must be positive numbers, got -1"),
])
def test_unbuildable_spaces_fail_with_one_line(field, value, message):
    import yaml

    from raynas.space import builtin_spaces

    doc = yaml.safe_load(builtin_spaces()["detection"].read_text())
    doc["space"][field] = value
    with pytest.raises(SpaceError) as exc:
        load_space(doc)
    assert len(str(exc.value).splitlines()) == 1 and re.search(message, str(exc.value))
