"""The object detector (``model: detection``): a searched backbone, neck and head assembled
into one of torchvision's detection models.

An architecture is the macro chain's (``stem_channels``, ``layers``: see ``raynas.models.macro``),
which is the backbone, plus:

- ``levels``: how many of the backbone's scales feed the head, the deepest ones (a scale's
  feature map is the last layer output at that resolution) of stride 4 or more; fewer if the
  chain has fewer (one that never reaches stride 4 gives its last output, max-pooled to it);
- ``neck``: ``fpn`` (torchvision's ``FeaturePyramidNetwork``: lateral 1x1 convolutions, a
  top-down pathway, 3x3 outputs) or ``none`` (a 1x1 convolution per level only), either giving
  every level ``neck_channels`` channels, as the shared heads need;
- ``head``: ``fcos`` (anchor-free, torchvision's ``FCOS``) or ``retinanet`` (anchor-based,
  torchvision's ``RetinaNet`` with focal loss);
- anchors, from torchvision's ``AnchorGenerator``: at a level of stride ``s`` the anchors are
  ``anchor_scale * s * 2**(k / anchor_octaves)`` pixels wide for k < ``anchor_octaves``, at
  each of ``anchor_ratios`` (height / width; a comma-separated string such as ``"0.5,1,2"``).
  FCOS takes one anchor per location: only ``anchor_scale`` applies to it (its centre sampling
  and box coding are relative to that size).

The model takes a list of float images (C, H, W) in [0, 1]; in training mode, with targets, it
returns its losses, in eval mode the boxes, scores and labels per image. It resizes nothing:
``input_shape`` (C, H, W) sets the size torchvision's transform keeps the images at.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from raynas.errors import SpaceError
from raynas.models import macro
from raynas.space.space import Space

#: The builder's output is a torchvision detector (boxes, not logits).
DETECTION = True
NECKS = ("none", "fpn")
HEADS = ("fcos", "retinanet")
#: What an architecture may leave out (a space that does not search it).
DEFAULTS = {"levels": 3, "neck": "fpn", "neck_channels": 32, "head": "fcos",
            "anchor_scale": 4, "anchor_octaves": 1, "anchor_ratios": "1"}
#: FCOS's head normalises with ``GroupNorm(16, channels)``.
CHANNEL_MULTIPLE = 16
MAX_LEVELS = 5
#: The finest level's stride: a head on finer maps costs much and, for objects of more than a few
#: pixels, gains little (torchvision's detectors start at stride 8).
MIN_STRIDE = 4


class Backbone(nn.Module):
    """The macro chain's deepest ``levels`` scales through the neck, as torchvision's detectors
    take a backbone: an ``OrderedDict`` of feature maps and one ``out_channels``."""

    def __init__(self, arch: dict[str, Any], input_shape: tuple[int, ...], levels: int,
                 neck: str, channels: int) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork

        self.trunk = macro.MacroNet(arch, input_shape, 0)
        r = self.trunk.reductions
        stages = [i for i in range(len(r)) if i + 1 == len(r) or r[i + 1] != r[i]]
        self.picks = ([i for i in stages if r[i] >= MIN_STRIDE] or stages[-1:])[-levels:]
        # A chain that never reaches MIN_STRIDE: its last output max-pooled down to it.
        self.pool = math.ceil(MIN_STRIDE / r[self.picks[0]])
        #: Each level's stride: how many input pixels one feature map cell spans.
        self.strides = [r[i] * self.pool for i in self.picks]
        widths = [self.trunk.channels[i] for i in self.picks]
        self.neck = FeaturePyramidNetwork(widths, channels) if neck == "fpn" else nn.ModuleList(
            nn.Conv2d(c, channels, 1) for c in widths)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        history = self.trunk.features(x)
        levels = OrderedDict((str(k), history[i] if self.pool == 1 else
                              nn.functional.max_pool2d(history[i], self.pool, ceil_mode=True))
                             for k, i in enumerate(self.picks))
        if isinstance(self.neck, nn.ModuleList):
            return OrderedDict((k, conv(v)) for (k, v), conv in zip(levels.items(), self.neck,
                                                                    strict=True))
        return self.neck(levels)


def ratios(text: str) -> tuple[float, ...]:
    """``"0.5,1,2"`` as (0.5, 1.0, 2.0); ValueError unless positive numbers."""
    values = tuple(float(v) for v in str(text).split(","))
    if not values or any(not v > 0 or v == float("inf") for v in values):
        raise ValueError(text)
    return values


def build(arch: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A torchvision ``FCOS`` or ``RetinaNet``; ``num_classes`` counts the background."""
    from torchvision.models.detection import FCOS, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    if len(input_shape) != 3:
        raise SpaceError(f"detection model: inputs must be images (C, H, W), got {input_shape}")
    a = {**DEFAULTS, **arch}
    backbone = Backbone(arch, input_shape, a["levels"], a["neck"], a["neck_channels"])
    octaves = a["anchor_octaves"] if a["head"] == "retinanet" else 1
    shape = ratios(a["anchor_ratios"]) if a["head"] == "retinanet" else (1.0,)
    anchors = AnchorGenerator(
        tuple(tuple(a["anchor_scale"] * s * 2 ** (k / octaves) for k in range(octaves))
              for s in backbone.strides), (shape,) * len(backbone.strides))
    size = {"min_size": min(input_shape[1:]), "max_size": max(input_shape[1:])}
    if a["head"] == "fcos":
        # torchvision's default score threshold (0.2) drops the low-scored boxes that mAP
        # still counts; RetinaNet's is 0.05.
        return FCOS(backbone, num_classes, anchor_generator=anchors, score_thresh=0.05, **size)
    # at most 100 boxes an image, as COCO's mAP counts (torchvision's RetinaNet keeps 300)
    return RetinaNet(backbone, num_classes, anchor_generator=anchors, detections_per_img=100,
                     **size)


def check(space: Space, origin: str) -> None:
    """Every value the space can produce must build: the backbone as the macro chain, and the
    neck, head and anchors here."""
    macro.check(space, origin)

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
                           f"{f' to {high}' if high < float('inf') else ''}{also}, got {v!r}")

    for field, allowed in (("neck", NECKS), ("head", HEADS)):
        for v in finite(field):
            if v not in allowed:
                raise fail(field, f"unknown value {v!r}; known: {', '.join(allowed)}")
    integers("levels", 1, MAX_LEVELS)
    integers("neck_channels", CHANNEL_MULTIPLE, float("inf"),
             f" and multiples of {CHANNEL_MULTIPLE} (FCOS's GroupNorm)")
    integers("anchor_octaves", 1, 4)
    for v in finite("anchor_scale"):
        if not isinstance(v, int | float) or isinstance(v, bool) or not 0 < v < 1e6:
            raise fail("anchor_scale", f"must be positive numbers, got {v!r}")
    for v in finite("anchor_ratios"):
        try:
            ratios(v)
        except ValueError:
            raise fail("anchor_ratios", f"must be positive numbers separated by commas "
                       f"(e.g. '0.5,1,2'), got {v!r}") from None
