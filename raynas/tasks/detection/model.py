"""The object detector (``model: detection``): a searched backbone, neck and head assembled
into one of torchvision's detection models.

An architecture is the macro chain's (``stem_channels``, ``layers``: see ``raynas.models.macro``),
which is the backbone, or ``backbone``: one of torchvision's classification networks in
``backbones.BACKBONES`` (from scratch, or from ``backbone_weights``, a file of its weights, with
``trainable_stages`` of it trained: see ``raynas.tasks.detection.backbones``), plus:

- ``levels``: how many of the backbone's scales feed the head, the deepest ones (a scale's
  feature map is the last layer output at that resolution) of stride 4 or more; fewer if the
  chain has fewer (one that never reaches stride 4 gives its last output, max-pooled to it);
- ``neck``, giving every level ``neck_channels`` channels, as the shared heads need: ``none``
  (a 1x1 convolution per level), ``fpn`` (torchvision's ``FeaturePyramidNetwork``: lateral 1x1
  convolutions, a top-down pathway, 3x3 outputs) or ``bifpn`` (EfficientDet's BiFPN: the 1x1
  convolutions, then ``bifpn_repeats`` times a top-down and a bottom-up pathway whose nodes mix
  their inputs by learnt non-negative weights; with one level there is nothing to fuse and it
  is ``none``);
- ``head``: ``fcos`` (anchor-free, torchvision's ``FCOS``), ``retinanet`` (anchor-based,
  torchvision's ``RetinaNet`` with focal loss), ``ssdlite`` (anchor-based, torchvision's ``SSD``
  with an ``SSDLiteHead``: depthwise-separable predictors, hard negative mining) or
  ``faster_rcnn`` (two-stage, torchvision's ``FasterRCNN``: a region proposal network on the
  anchors, ``MultiScaleRoIAlign`` of each proposal from its level, a two-layer box head);
- anchors, from torchvision's ``AnchorGenerator`` (RetinaNet, and Faster R-CNN's proposals): at
  a level of stride ``s`` the anchors are ``anchor_scale * s * 2**(k / anchor_octaves)`` pixels
  wide for k < ``anchor_octaves``, at each of ``anchor_ratios`` (height / width; a
  comma-separated string such as ``"0.5,1,2"``). FCOS takes one anchor per location: only
  ``anchor_scale`` applies to it (its centre sampling and box coding are relative to that size).
  SSD's ``DefaultBoxGenerator`` has its own scheme, mapped as: a level's box is
  ``anchor_scale * s`` pixels wide (as a fraction of the image's side, so stretched with a
  non-square image), plus the square between it and the next level's (SSD's fixed second size,
  in place of ``anchor_octaves``), and each ratio r other than 1 adds the boxes of r and 1/r
  (SSD's aspect ratios come in such pairs).

The model takes a list of float images (C, H, W) in [0, 1]; in training mode, with targets, it
returns its losses, in eval mode the boxes, scores and labels per image, at most 100 (as many as
COCO's mAP counts) scored 0.05 or more. ``input_scale`` (default 1) is the input size, as a
share of ``input_shape`` (C, H, W), the data's: torchvision's own transform resizes every image,
keeping its aspect ratio, so that its sides fit ``input_scale`` x (H, W) (its shorter side to
the shorter, unless the longer would then exceed the longer: a letterbox fit; SSD stretches to
exactly that size), moves the training boxes with it and the predicted boxes back to the
image's own pixels. A search that has it choose, e.g., [0.5, 1] trades resolution (small
objects) for time; a fixed value sets it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.misc import Conv2dNormActivation

from raynas.errors import SpaceError, show
from raynas.models import macro
from raynas.report.graph import Graph, macro_graph
from raynas.space.space import Space
from raynas.tasks.detection.backbones import BACKBONES, STAGES, TorchvisionTrunk

NECKS = ("none", "fpn", "bifpn")
HEADS = ("fcos", "retinanet", "ssdlite", "faster_rcnn")
#: What an architecture may leave out (a space that does not search it).
DEFAULTS = {"backbone": "macro", "backbone_weights": None, "trainable_stages": STAGES,
            "levels": 3, "neck": "fpn", "neck_channels": 32, "bifpn_repeats": 1,
            "head": "fcos", "anchor_scale": 4, "anchor_octaves": 1, "anchor_ratios": "1",
            "input_scale": 1.0}
#: The largest ``input_scale``: upsampling further only adds cost.
MAX_INPUT_SCALE = 2.0
#: FCOS's and RetinaNet's heads normalise with ``GroupNorm(CHANNEL_MULTIPLE, channels)``.
CHANNEL_MULTIPLE = 32
MAX_LEVELS = 5
#: EfficientDet repeats its BiFPN 3 (D0) to 8 (D7) times.
MAX_BIFPN_REPEATS = 8
#: The finest level's stride: a head on finer maps costs much and, for objects of more than a few
#: pixels, gains little (torchvision's detectors start at stride 8).
MIN_STRIDE = 4
#: Boxes kept per image (COCO's mAP counts 100), and the lowest score kept: torchvision's FCOS
#: default (0.2) drops low-scored boxes that mAP still counts.
DETECTIONS, SCORE_THRESH = 100, 0.05
#: Faster R-CNN's box head: 7x7 RoIs through two fully connected layers this wide
#: (torchvision's 1024 is for 800-pixel COCO images, and too slow on a CPU).
ROI_SIZE, REPRESENTATION = 7, 128
#: Faster R-CNN's proposals: the best PROPOSALS[0] anchors a level before NMS, PROPOSALS[1] in
#: all after, and ROIS_PER_IMAGE of them sampled to train the box head (torchvision's 2000,
#: 2000 and 512 are for 800-pixel images; on CPU the RoIAlign backward pass dominates).
PROPOSALS, ROIS_PER_IMAGE = (500, 300), 128


class Lateral(nn.Module):
    """A 1x1 convolution per level, to the neck's channels (the ``none`` neck)."""

    def __init__(self, widths: list[int], channels: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in widths)

    def forward(self, x: OrderedDict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict((k, conv(v)) for (k, v), conv in zip(x.items(), self.convs,
                                                                strict=True))


class Fusion(nn.Module):
    """A BiFPN node: EfficientDet's fast normalised fusion (the inputs, resized to the first's
    size, averaged by weights kept non-negative by a ReLU), then swish, a depthwise-separable
    3x3 convolution and BatchNorm."""

    def __init__(self, inputs: int, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(inputs))
        # EfficientDet's order, linear out: stacked passes trained far better so than with the
        # Conv-BN-ReLU blocks of the dw_conv_3x3 op (test mAP@.5 0.46 against 0.10, 3 passes)
        self.conv = nn.Sequential(
            nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
            Conv2dNormActivation(channels, channels, 1, activation_layer=None))

    def weights(self) -> torch.Tensor:
        w = nn.functional.relu(self.weight)
        return w / (w.sum() + 1e-4)  # EfficientDet's epsilon: no division by zero

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        size = inputs[0].shape[-2:]
        resized = [x if x.shape[-2:] == size else
                   nn.functional.adaptive_max_pool2d(x, size) if x.shape[-1] > size[-1] else
                   nn.functional.interpolate(x, size=size, mode="nearest") for x in inputs]
        return self.conv(sum(w * x for w, x in zip(self.weights(), resized, strict=True)))


class BiFPNLayer(nn.Module):
    """One BiFPN pass over the levels (finest first). torchvision has no BiFPN, so it is written
    here: top-down, node i fuses level i with node i+1; bottom-up, output i fuses level i, the
    top-down node i (except on the coarsest level, whose top-down node is its input) and
    output i-1. The finest output is its top-down node."""

    def __init__(self, levels: int, channels: int) -> None:
        super().__init__()
        self.top_down = nn.ModuleList(Fusion(2, channels) for _ in range(levels - 1))
        self.bottom_up = nn.ModuleList(Fusion(3 if i < levels - 1 else 2, channels)
                                       for i in range(1, levels))

    def forward(self, x: OrderedDict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        inputs = list(x.values())
        down = inputs[:]
        for i in reversed(range(len(inputs) - 1)):
            down[i] = self.top_down[i]([inputs[i], down[i + 1]])
        out = down[:1]
        for i, node in enumerate(self.bottom_up, start=1):
            middle = [down[i]] if i < len(inputs) - 1 else []
            out.append(node([inputs[i], *middle, out[-1]]))
        return OrderedDict(zip(x, out, strict=True))


def neck(kind: str, widths: list[int], channels: int, repeats: int) -> nn.Module:
    """The neck: an ``OrderedDict`` of levels in, the same levels at ``channels`` out."""
    if kind == "fpn":
        return FeaturePyramidNetwork(widths, channels)
    lateral = Lateral(widths, channels)
    if kind == "none" or len(widths) == 1:
        return lateral
    return nn.Sequential(lateral, *(BiFPNLayer(len(widths), channels) for _ in range(repeats)))


class Backbone(nn.Module):
    """The trunk's (the macro chain's or torchvision's network's) deepest ``levels`` scales
    through the neck, as torchvision's detectors take a backbone: an ``OrderedDict`` of feature
    maps and one ``out_channels``."""

    def __init__(self, arch: dict[str, Any], input_shape: tuple[int, ...]) -> None:
        super().__init__()
        a = {**DEFAULTS, **arch}
        if a["backbone"] == "macro":
            self.trunk = macro.MacroNet(arch, input_shape, 0)
        elif input_shape[0] != 3:
            raise SpaceError(f"backbone {a['backbone']}: takes RGB images, got {input_shape[0]} "
                             "channels")
        else:
            self.trunk = TorchvisionTrunk(a["backbone"], a["backbone_weights"],
                                          a["trainable_stages"])
        r = self.trunk.reductions
        stages = [i for i in range(len(r)) if i + 1 == len(r) or r[i + 1] != r[i]]
        self.picks = ([i for i in stages if r[i] >= MIN_STRIDE] or stages[-1:])[-a["levels"]:]
        # A chain that never reaches MIN_STRIDE: its last output max-pooled down to it.
        self.pool = math.ceil(MIN_STRIDE / r[self.picks[0]])
        #: Each level's stride: how many input pixels one feature map cell spans.
        self.strides = [r[i] * self.pool for i in self.picks]
        self.neck = neck(a["neck"], [self.trunk.channels[i] for i in self.picks],
                         a["neck_channels"], a["bifpn_repeats"])
        self.out_channels = a["neck_channels"]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        history = self.trunk.features(x)
        return self.neck(OrderedDict(
            (str(k), history[i] if self.pool == 1 else
             nn.functional.max_pool2d(history[i], self.pool, ceil_mode=True))
            for k, i in enumerate(self.picks)))


def ratios(text: str) -> tuple[float, ...]:
    """``"0.5,1,2"`` as (0.5, 1.0, 2.0); ValueError unless positive numbers."""
    values = tuple(float(v) for v in str(text).split(","))
    if not values or any(not v > 0 or v == float("inf") for v in values):
        raise ValueError(text)
    return values


def anchor_generator(a: dict[str, Any], strides: list[int]) -> nn.Module:
    """The anchors of RetinaNet, Faster R-CNN and (one a location) FCOS: see the module's
    docstring."""
    octaves = a["anchor_octaves"]
    return AnchorGenerator(
        tuple(tuple(a["anchor_scale"] * s * 2 ** (k / octaves) for k in range(octaves))
              for s in strides), (ratios(a["anchor_ratios"]),) * len(strides))


def keep_size(input_shape: tuple[int, ...]) -> dict[str, int]:
    """The transform's sizes that resize an image to fit ``input_shape`` (the scaled one)."""
    return {"min_size": min(input_shape[1:]), "max_size": max(input_shape[1:])}


def fcos(backbone: Backbone, a: dict[str, Any], input_shape: tuple[int, ...], num_classes: int
         ) -> nn.Module:
    one = anchor_generator({**a, "anchor_octaves": 1, "anchor_ratios": "1"}, backbone.strides)
    return FCOS(backbone, num_classes, anchor_generator=one, score_thresh=SCORE_THRESH,
                detections_per_img=DETECTIONS, **keep_size(input_shape))


def retinanet(backbone: Backbone, a: dict[str, Any], input_shape: tuple[int, ...],
              num_classes: int) -> nn.Module:
    anchors = anchor_generator(a, backbone.strides)
    # GroupNorm in the head's convolutions, as in torchvision's RetinaNet v2 and as FCOS's head:
    # the v1 head has none, and on a backbone trained from scratch its scores swung from 0 to
    # 0.7 between epochs (test mAP@.5 0.05 after 10 epochs on the demo shapes, 0.33 with it).
    head = RetinaNetHead(backbone.out_channels, anchors.num_anchors_per_location()[0],
                         num_classes, norm_layer=partial(nn.GroupNorm, CHANNEL_MULTIPLE))
    return RetinaNet(backbone, num_classes, anchor_generator=anchors, head=head,
                     score_thresh=SCORE_THRESH, detections_per_img=DETECTIONS,
                     **keep_size(input_shape))


def ssdlite(backbone: Backbone, a: dict[str, Any], input_shape: tuple[int, ...],
            num_classes: int) -> nn.Module:
    strides, side = backbone.strides, min(input_shape[1:])
    scales = [a["anchor_scale"] * s / side for s in [*strides, 2 * strides[-1]]]
    pairs = sorted({max(r, 1 / r) for r in ratios(a["anchor_ratios"]) if r != 1})
    boxes = DefaultBoxGenerator([pairs] * len(strides), scales=scales, steps=strides)
    # torchvision's SSDlite normalises its head with this BatchNorm
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    head = SSDLiteHead([backbone.out_channels] * len(strides), boxes.num_anchors_per_location(),
                       num_classes, norm)
    # SSD resizes every image to a fixed (width, height): the input's
    return SSD(backbone, boxes, (input_shape[2], input_shape[1]), num_classes, head=head,
               score_thresh=SCORE_THRESH, detections_per_img=DETECTIONS)


def faster_rcnn(backbone: Backbone, a: dict[str, Any], input_shape: tuple[int, ...],
                num_classes: int) -> nn.Module:
    # A proposal anchor_scale * s pixels wide is pooled from the level of stride s, as are the
    # anchors that proposed it (FPN's rule maps 224 pixels, ImageNet's objects, to level 4).
    pool = MultiScaleRoIAlign(list(map(str, range(len(backbone.strides)))), ROI_SIZE, 2,
                              canonical_scale=a["anchor_scale"] * 2 ** 4, canonical_level=4)
    return FasterRCNN(
        backbone, rpn_anchor_generator=anchor_generator(a, backbone.strides), box_roi_pool=pool,
        box_head=TwoMLPHead(backbone.out_channels * ROI_SIZE ** 2, REPRESENTATION),
        box_predictor=FastRCNNPredictor(REPRESENTATION, num_classes),
        rpn_pre_nms_top_n_train=PROPOSALS[0], rpn_pre_nms_top_n_test=PROPOSALS[0],
        rpn_post_nms_top_n_train=PROPOSALS[1], rpn_post_nms_top_n_test=PROPOSALS[1],
        box_batch_size_per_image=ROIS_PER_IMAGE, box_score_thresh=SCORE_THRESH,
        box_detections_per_img=DETECTIONS, **keep_size(input_shape))


HEAD_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "fcos": fcos, "retinanet": retinanet, "ssdlite": ssdlite, "faster_rcnn": faster_rcnn}


def build(arch: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A torchvision detector with the architecture's head; ``num_classes`` counts the
    background."""
    if len(input_shape) != 3:
        raise SpaceError(f"detection model: inputs must be images (C, H, W), got {input_shape}")
    a = {**DEFAULTS, **arch}
    c, h, w = input_shape
    shape = (c, max(1, round(h * a["input_scale"])), max(1, round(w * a["input_scale"])))
    return HEAD_BUILDERS[a["head"]](Backbone(arch, shape), a, shape, num_classes)


def check(space: Space, origin: str) -> None:
    """Every value the space can produce must build: the backbone as the macro chain's or a
    torchvision network's (with its weights file), and the neck, head and anchors here."""
    def fail(field: str, message: str) -> SpaceError:
        return SpaceError(f"{origin}: space.{field}: {message}")

    def finite(field: str) -> list[Any]:
        if space.domain(field) is None:
            return [DEFAULTS[field]]
        options = space.values(field)
        if options is None:
            raise fail(field, "must be a constant, a choice or an int range")
        return options

    def integers(field: str, low: int, high: float, also: str = "") -> None:
        for v in finite(field):
            if (not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high
                    or (also and v % CHANNEL_MULTIPLE)):
                raise fail(field, f"must be integers from {low}"
                           f"{f' to {high}' if high < float('inf') else ''}{also}, got {show(v)}")

    for field, allowed in (("backbone", ("macro", *BACKBONES)), ("neck", NECKS),
                           ("head", HEADS)):
        for v in finite(field):
            if v not in allowed:
                raise fail(field, f"unknown value {show(v)}; known: {', '.join(allowed)}")
    backbones = finite("backbone")
    if "macro" in backbones:
        macro.check(space, origin)
    else:
        for field in ("stem_channels", "layers"):
            if space.domain(field) is not None:
                raise fail(field, f"unused: the backbone is {', '.join(backbones)}, not the "
                           "macro chain")
    check_weights(space, origin, backbones, finite("backbone_weights"))
    integers("trainable_stages", 0, STAGES)
    integers("levels", 1, MAX_LEVELS)
    integers("neck_channels", CHANNEL_MULTIPLE, float("inf"),
             f" and multiples of {CHANNEL_MULTIPLE} (the heads' GroupNorm)")
    integers("bifpn_repeats", 1, MAX_BIFPN_REPEATS)
    integers("anchor_octaves", 1, 4)
    for v in finite("anchor_scale"):
        if not isinstance(v, int | float) or isinstance(v, bool) or not 0 < v < 1e6:
            raise fail("anchor_scale", f"must be positive numbers, got {show(v)}")
    for v in finite("input_scale"):
        if not isinstance(v, int | float) or isinstance(v, bool) or not 0 < v <= MAX_INPUT_SCALE:
            raise fail("input_scale", f"must be numbers in (0, {MAX_INPUT_SCALE}], got {show(v)}")
    for v in finite("anchor_ratios"):
        try:
            ratios(v)
        except ValueError:
            raise fail("anchor_ratios", f"must be positive numbers separated by commas "
                       f"(e.g. '0.5,1,2'), got {show(v)}") from None


def check_weights(space: Space, origin: str, backbones: list[Any], files: list[Any]) -> None:
    """Weights are one network's: a fixed torchvision backbone, and a file that holds its
    weights (read here, so a wrong one stops the search before it starts)."""
    for path in files:
        if path is None:
            continue
        if not isinstance(path, str) or len(backbones) != 1 or backbones[0] == "macro":
            raise SpaceError(f"{origin}: space.backbone_weights: a file of one torchvision "
                             f"network's weights, with a fixed backbone ({', '.join(BACKBONES)})"
                             f"; got {show(path)} for backbone {', '.join(map(str, backbones))}")
        TorchvisionTrunk(backbones[0], path)


def check_output(model: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> None:
    """What the detection task needs of a network (``ModelBuilder.check_output``): in training
    mode, given boxes, named finite scalar losses that reach its weights; in eval mode, per
    image at most ``DETECTIONS`` boxes (x1 <= x2, y1 <= y2, inside the image), each with a score
    of at least ``SCORE_THRESH`` and a label (an untrained one scores the background too).
    AssertionError naming what is not."""
    _, h, w = input_shape
    images = [torch.rand(input_shape, generator=torch.Generator().manual_seed(i))
              for i in range(2)]
    targets = [{"boxes": torch.tensor([[w / 8, h / 8, w / 2, h / 2]]),
                "labels": torch.tensor([label])} for label in (1, num_classes - 1)]
    model.train()
    losses = model(images, targets)
    if not isinstance(losses, dict) or not losses:
        raise AssertionError(f"training mode: expected a dict of losses, got {type(losses)}")
    for name, loss in losses.items():
        if loss.dim() != 0 or not torch.isfinite(loss):
            raise AssertionError(f"training mode: loss {name!r} is not a finite scalar: {loss}")
    sum(losses.values()).backward()
    if not any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()):
        raise AssertionError("training mode: the losses give no weight a gradient")
    model.eval()
    with torch.no_grad():
        found = model(images)
    if len(found) != len(images):
        raise AssertionError(f"eval mode: {len(found)} predictions for {len(images)} images")
    for i, one in enumerate(found):
        boxes, scores, labels = one["boxes"], one["scores"], one["labels"]
        n = len(boxes)
        if boxes.shape != (n, 4) or scores.shape != (n,) or labels.shape != (n,) \
                or n > DETECTIONS:
            raise AssertionError(f"eval mode, image {i}: boxes {tuple(boxes.shape)}, scores "
                                 f"{tuple(scores.shape)}, labels {tuple(labels.shape)}; "
                                 f"expected (n, 4), (n,), (n,) with n <= {DETECTIONS}")
        if ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]) | (boxes < 0).any(1)
                | (boxes[:, 2] > w) | (boxes[:, 3] > h)).any():
            raise AssertionError(f"eval mode, image {i}: a box is not (x1, y1, x2, y2) inside "
                                 f"the {w}x{h} image")
        if (scores < SCORE_THRESH).any() or ((labels < 0) | (labels >= num_classes)).any():
            raise AssertionError(f"eval mode, image {i}: a score under {SCORE_THRESH} or a "
                                 f"label outside 0..{num_classes - 1}")


def graph(arch: dict[str, Any]) -> list[Graph]:
    """The report's picture of a detector (``ModelBuilder.graph``): its backbone chain, then
    the neck and head on the deepest scales."""
    a = {**DEFAULTS, **arch}
    necks = {"none": "1x1 convs", "fpn": "FPN", "bifpn": f"BiFPN x{a['bifpn_repeats']}"}
    heads = {"fcos": "FCOS", "retinanet": "RetinaNet", "ssdlite": "SSDlite",
             "faster_rcnn": "Faster R-CNN"}
    head = (f"{necks[a['neck']]} ({a['neck_channels']} ch) on {a['levels']} scales, "
            f"{heads[a['head']]} head")
    if a["backbone"] == "macro":
        return macro_graph(arch, head)
    g = Graph(f"detection: torchvision {a['backbone']}")
    weights = a["backbone_weights"]
    body = a["backbone"] + ("" if weights is None else f"\nfrom {Path(weights).name}")
    g.edge(g.node("input", "input", "input"), g.node("x", "feature maps"), body)
    g.edge("x", g.node("output", "output", "output"), head)
    return [g]
