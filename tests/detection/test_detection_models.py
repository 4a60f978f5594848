"""The ``detection`` space and builder: every sampled architecture builds as a torchvision
detector that trains and predicts on 64x64 images, every neck (1x1 convolutions, FPN, BiFPN)
and head (FCOS, RetinaNet, SSDlite, Faster R-CNN) learns a batch of the demo shapes, levels
and anchors follow the architecture, and what cannot build is refused with one line."""

from __future__ import annotations

import math
import random
import re

import pytest
import torch
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.ops import MultiScaleRoIAlign

from raynas.errors import SpaceError
from raynas.estimation import load_space
from raynas.models import build_model
from raynas.space import Space
from raynas.tasks.detection.data import load_detection
from raynas.tasks.detection.model import HEADS, NECKS, Fusion, build
from raynas.tasks.detection.train import loader

SPACE = load_space("detection")
IMAGES = [torch.rand(3, 64, 64) for _ in range(2)]
DETECTORS = {"fcos": FCOS, "retinanet": RetinaNet, "ssdlite": SSD, "faster_rcnn": FasterRCNN}
TARGETS = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1])},
           {"boxes": torch.tensor([[20.0, 4.0, 36.0, 20.0]]), "labels": torch.tensor([3])}]


def layer(stride: int, connection: str = "series") -> dict:
    return {"op": "conv_3x3", "channels": 16, "stride": stride, "connection": connection}


def test_sampled_architectures_train_and_predict():
    heads = set()
    for seed in range(8):
        # every head the space lists, each on at least two sampled architectures
        head = SPACE.values("head")[seed % len(SPACE.values("head"))]
        arch = SPACE.validate({**SPACE.sample(random.Random(seed)), "head": head})
        model = build_model(SPACE, arch, (3, 64, 64), 4)
        assert isinstance(model, DETECTORS[arch["head"]])
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
    assert heads == set(SPACE.values("head"))


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
    ("neck", {"choice": ["fpn", "panet"]},
     r"space\.neck: unknown value 'panet'; known: none, fpn, bifpn"),
    ("head", "ssd", r"space\.head: unknown value 'ssd'; known: fcos, retinanet, ssdlite, "
                    r"faster_rcnn"),
    ("bifpn_repeats", {"int": [1, 9]}, r"space\.bifpn_repeats: must be integers from 1 to 8, "
                                       r"got 9"),
    ("bifpn_repeats", 0, r"space\.bifpn_repeats: must be integers from 1 to 8, got 0"),
    ("neck_channels", {"choice": [32, 48]}, r"space\.neck_channels: .*multiples of 32 .*got 48"),
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


def full_space() -> Space:
    """The detection space searching every neck and head (the shipped one may list fewer)."""
    import yaml

    from raynas.space import builtin_spaces

    doc = yaml.safe_load(builtin_spaces()["detection"].read_text())
    doc["space"].update(neck={"choice": list(NECKS)}, head={"choice": list(HEADS)},
                        bifpn_repeats={"int": [1, 3]})
    return load_space(doc)


@pytest.fixture(scope="module")
def batch(shapes) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Eight demo images with their boxes (augmented once, then kept)."""
    torch.manual_seed(0)
    return next(iter(loader(load_detection(f"coco:{shapes}").train, 8)))


@pytest.mark.parametrize("neck", NECKS)
@pytest.mark.parametrize("head", HEADS)
def test_every_head_and_neck_learns_a_batch_and_predicts(head, neck, batch):
    space = full_space()
    arch = space.validate({**space.sample(random.Random(0)), "layers": [
        layer(2), layer(2), layer(2)], "levels": 2, "head": head, "neck": neck,
        "anchor_octaves": 3, "anchor_ratios": "0.5,1,2", "bifpn_repeats": 2})
    torch.manual_seed(0)
    model = build_model(space, arch, (3, 64, 64), 4)
    images, targets = batch
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()
    losses = []
    for _ in range(5):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 8 and all(set(o) == {"boxes", "scores", "labels"} for o in out)
    assert all(len(o["boxes"]) == len(o["scores"]) <= 100 for o in out)
    assert all(o["boxes"].shape[-1] == 4 and (o["scores"] >= 0.05).all() for o in out)


def test_bifpn_fuses_by_non_negative_weights_that_learn(batch):
    space = full_space()
    arch = space.validate({**space.sample(random.Random(0)), "layers": [
        layer(2), layer(2), layer(2), layer(2)], "levels": 3, "head": "fcos", "neck": "bifpn",
        "neck_channels": 32, "bifpn_repeats": 2})
    torch.manual_seed(0)
    model = build_model(space, arch, (3, 64, 64), 4)
    nodes = [m for m in model.backbone.neck.modules() if isinstance(m, Fusion)]
    # per pass: 2 top-down nodes of 2 inputs, 2 bottom-up nodes of 3 (middle) and 2 (coarsest)
    assert [len(n.weight) for n in nodes] == [2, 2, 3, 2] * 2
    images, targets = batch
    opt = torch.optim.SGD(model.parameters(), lr=5.0)  # large steps: raw weights go negative
    model.train()
    for step in range(3):
        opt.zero_grad()
        sum(model(images, targets).values()).backward()
        if step == 0:
            assert all(n.weight.grad.abs().sum() > 0 for n in nodes)
        opt.step()
    assert any((n.weight < 0).any() for n in nodes)
    for n in nodes:
        w = n.weights()
        assert (w >= 0).all() and w.sum().item() == pytest.approx(
            1 if (n.weight > 0).any() else 0, abs=1e-3)
    # a negative raw weight shuts its input out: the node sees only the other one
    node = nodes[0].eval()
    a, b = torch.rand(1, 32, 8, 8), torch.rand(1, 32, 4, 4)
    with torch.no_grad():
        node.weight.copy_(torch.tensor([2.0, -1.0]))
        assert torch.allclose(node([a, b]), node.conv(a * 2 / (2 + 1e-4)))


@pytest.mark.parametrize("levels", [1, 2, 3, 4, 5])
def test_bifpn_keeps_every_level_at_neck_channels(levels):
    # 60 pixels: levels of 15, 8, 4 and 2 cells, which do not halve exactly
    arch = {"stem_channels": 8, "layers": [layer(2)] * 6, "levels": levels, "neck": "bifpn",
            "neck_channels": 32, "bifpn_repeats": 3}
    backbone = build(arch, (3, 60, 60), 4).backbone
    out = backbone(torch.rand(2, 3, 60, 60))
    assert [v.shape[1:] for v in out.values()] == [
        (32, s, s) for s in [15, 8, 4, 2, 1][-levels:]]
    fusions = sum(isinstance(m, Fusion) for m in backbone.modules())
    assert fusions == 3 * 2 * (levels - 1)


def test_ssdlite_and_faster_rcnn_take_the_searched_anchors_and_keep_the_image_size():
    arch = {"stem_channels": 8, "layers": [layer(2)] * 4, "levels": 2, "head": "ssdlite",
            "anchor_scale": 2, "anchor_octaves": 3, "anchor_ratios": "0.5,1,2,3"}
    ssd = build(arch, (3, 48, 64), 4)
    assert isinstance(ssd, SSD) and isinstance(ssd.head, SSDLiteHead)
    boxes = ssd.anchor_generator
    # ratios 2 and 0.5 are one SSD pair, 3 another; 2 squares + 2 boxes a pair
    assert boxes.aspect_ratios == [[2.0, 3.0], [2.0, 3.0]]
    assert boxes.num_anchors_per_location() == [6, 6]
    # anchor_scale * stride (8 and 16) as a fraction of the side, the last times 2 for s'
    assert boxes.scales == pytest.approx([16 / 48, 32 / 48, 64 / 48])
    assert ssd.transform.fixed_size == (64, 48) and ssd.detections_per_img == 100

    rcnn = build({**arch, "head": "faster_rcnn"}, (3, 48, 64), 4)
    assert isinstance(rcnn, FasterRCNN)
    assert rcnn.rpn.anchor_generator.num_anchors_per_location() == [12, 12]
    pool = rcnn.roi_heads.box_roi_pool
    assert isinstance(pool, MultiScaleRoIAlign) and pool.featmap_names == ["0", "1"]
    assert rcnn.roi_heads.detections_per_img == 100 and rcnn.roi_heads.score_thresh == 0.05
    image = torch.rand(3, 48, 64)
    for model in (ssd, rcnn):
        assert model.transform([image])[0].image_sizes == [(48, 64)]  # not resized
        model.eval()
        with torch.no_grad():
            (out,) = model([image])
        assert len(out["boxes"]) <= 100
        assert (out["boxes"][:, 2] <= 64).all() and (out["boxes"][:, 3] <= 48).all()
    # a proposal of anchor_scale x stride pixels is pooled from that stride's level (the
    # pooler set its levels up in the forward pass above)
    levels = pool.map_levels([torch.tensor([[0.0, 0, 16, 16], [0, 0, 32, 32]])])
    assert levels.tolist() == [0, 1]


@pytest.mark.parametrize(("neck", "head", "shown"), [
    ("bifpn", "ssdlite", "BiFPN x1 (32 ch) on 2 scales, SSDlite head"),
    ("fpn", "faster_rcnn", "FPN (32 ch) on 2 scales, Faster R-CNN head"),
    ("none", "fcos", "1x1 convs (32 ch) on 2 scales, FCOS head"),
])
def test_the_diagram_names_the_neck_and_the_head(neck, head, shown):
    from raynas.report.graph import graph_of
    from raynas.tasks.detection.bench import baseline_arch

    arch = {**baseline_arch(load_space("detection")), "neck": neck, "head": head}
    [graph] = graph_of("detection")(arch)  # the builder's, as the report finds it
    assert shown in [e.label for e in graph.edges]
