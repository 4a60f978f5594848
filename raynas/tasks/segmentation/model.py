"""The 3-D segmentation network (``model: unet3d``): a U-Net whose depth, per-level ops and
channels, attention gates on the skips and fusion of scales are searched.

An architecture is ``{levels: [{op, channels}, ...], attention: bool, fusion: none |
multi_scale}``. Level ``i`` of the encoder runs its op (stride 2 from the second level on, so
each level halves the volume); the decoder climbs back, upsampling with a transposed
convolution (MONAI's ``UpSample``), concatenating the level's skip and running the level's op
again. ``attention`` gates every skip with the decoder's features first (the additive gate of
MONAI's ``AttentionUnet``); ``multi_scale`` adds a 1x1x1 class map from every decoder level,
upsampled to full size, to the final one (deep-supervision-style fusion of scales). The output is
per-voxel class logits (N, K, D, H, W). MONAI's fixed ``UNet``/``AttentionUnet`` cannot take a
different op per level, hence this assembly of its blocks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from monai.networks.nets.attentionunet import AttentionBlock
from torch import nn

from raynas.errors import SpaceError, did_you_mean, show
from raynas.models.supernet import Mix, MixedEdges, Path
from raynas.ops import OPS
from raynas.ops.blocks import monai_blocks
from raynas.space.nodes import Group, Repeat
from raynas.space.space import Arch, Space

LEVEL_FIELDS = ("op", "channels")
FUSIONS = ("none", "multi_scale")
#: Builds level ``i``'s op from (i, c_in, c_out, stride); a supernet passes one that makes a
#: mixed op of every candidate (``LevelEdges``).
LevelOp = Callable[[int, int, int, int], nn.Module]


class UNet3D(nn.Module):
    """The searched U-Net for volumes shaped (C, D, H, W)."""

    def __init__(self, arch: dict[str, Any], input_shape: tuple[int, ...], num_classes: int,
                 width: float = 1.0, level_op: LevelOp | None = None) -> None:
        super().__init__()
        if len(input_shape) != 4:
            raise SpaceError(f"unet3d model: inputs must be volumes (C, D, H, W), got "
                             f"{input_shape}")
        blocks = monai_blocks()
        channels = [max(1, round(level["channels"] * width)) for level in arch["levels"]]
        if level_op is None:
            def level_op(i: int, c_in: int, c_out: int, stride: int) -> nn.Module:
                return OPS[arch["levels"][i]["op"]](c_in, c_out, stride, 3)
        size, c_prev = min(input_shape[1:]), input_shape[0]
        self.encoder = nn.ModuleList()
        for i, c in enumerate(channels):
            stride = 2 if i and size > 1 else 1
            self.encoder.append(level_op(i, c_prev, c, stride))
            size, c_prev = math.ceil(size / stride), c
        self.up, self.gates, self.decoder, self.side = (nn.ModuleList() for _ in range(4))
        for i in reversed(range(len(channels) - 1)):
            c = channels[i]
            self.up.append(blocks.UpSample(3, channels[i + 1], c, scale_factor=2,
                                           mode="deconv"))
            self.gates.append(AttentionBlock(3, max(1, c // 2), c, c) if arch["attention"]
                              else nn.Identity())
            self.decoder.append(level_op(i, 2 * c, c, 1))
            if arch["fusion"] == "multi_scale" and i:
                self.side.append(blocks.Convolution(3, c, num_classes, kernel_size=1,
                                                    conv_only=True))
        self.head = blocks.Convolution(3, channels[0], num_classes, kernel_size=1,
                                       conv_only=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
        sides = []
        for j, (up, gate, decode) in enumerate(zip(self.up, self.gates, self.decoder,
                                                   strict=True)):
            skip = skips[-2 - j]
            y = up(x)
            if y.shape[2:] != skip.shape[2:]:  # an odd size rounded up on the way down
                y = nn.functional.interpolate(y, size=skip.shape[2:])
            skip = skip if isinstance(gate, nn.Identity) else gate(y, skip)
            x = decode(torch.cat([y, skip], dim=1))
            if j < len(self.side):
                sides.append(self.side[j](x))
        out = self.head(x)
        for side in sides:
            out = out + nn.functional.interpolate(side, size=out.shape[2:], mode="trilinear")
        return out


def check(space: Space, origin: str) -> None:
    """Every value the space can produce must be buildable (MONAI installed included)."""
    monai_blocks()

    def fail(field: str, message: str) -> SpaceError:
        return SpaceError(f"{origin}: space.{field}: {message}")

    def finite(field: str) -> list[Any]:
        options = space.values(field)
        if options is None:
            raise fail(field, "must be a constant, a choice or an int range")
        return options

    levels = space.domain("levels")
    if not isinstance(levels, Repeat) or not isinstance(levels.block, Group):
        raise fail("levels", "the unet3d model needs 'levels: {repeat: [min, max], block: "
                   "{op: ..., channels: ...}}'")
    for field in LEVEL_FIELDS:
        if space.domain(f"levels.{field}") is None:
            raise fail(f"levels.block.{field}", "missing (a level needs op and channels)")
    for op in finite("levels.op"):
        if op not in OPS:
            raise fail("levels.block.op", f"unknown op {show(op)}{did_you_mean(op, OPS)}; known "
                       f"ops: {', '.join(OPS)}")
        if op == "zero":
            raise fail("levels.block.op", "zero would cut the network in two")
    for v in finite("levels.channels"):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise fail("levels.channels", f"must be positive integers, got {show(v)}")
    for field, allowed in (("attention", (True, False)), ("fusion", FUSIONS)):
        if space.domain(field) is None:
            raise fail(field, f"missing; one or a choice of {', '.join(map(str, allowed))}")
        for v in finite(field):
            if v not in allowed:
                raise fail(field, f"unknown value {show(v)}; known: {', '.join(map(str, allowed))}")


def build(arch: dict[str, Any], input_shape: tuple[int, ...], num_classes: int,
          width: float = 1.0) -> nn.Module:
    return UNet3D(arch, input_shape, num_classes, width)


class LevelEdges(MixedEdges):
    """The U-Net's supernet: each level's op is a mixed op over the candidate ops, one alpha row
    per level (edge ``(level,)``), shared by the level's encoder and decoder op."""

    searched = r"levels\.\d+\.op$"
    example = "unet3d_darts"  # depth, widths, gates and fusion fixed

    def __init__(self, space: Space) -> None:
        super().__init__(space)
        self.edges = {"levels": [(i,) for i in range(len(self.template["levels"]))]}
        self.ops = {"levels": self.candidates(["levels.op"], OPS)}

    def network(self, input_shape: tuple[int, ...], num_classes: int, mix: Mix) -> nn.Module:
        def level_op(i: int, c_in: int, c_out: int, stride: int) -> nn.Module:
            return mix("levels", (i,), lambda op: OPS[op](c_in, c_out, stride, 3))

        return UNet3D(self.template, input_shape, num_classes, level_op=level_op)

    def path(self, arch: Arch) -> Path:
        return {"levels": [self.ops["levels"].index(level["op"]) for level in arch["levels"]]}

    def derive(self, weights: dict[str, torch.Tensor]) -> Arch:
        ops = self.ops["levels"]
        levels = [{**level, "op": ops[int(row.argmax())]}
                  for level, row in zip(self.template["levels"], weights["levels"], strict=True)]
        return {**self.template, "levels": levels}

    def skip_count(self, arch: Arch) -> int:
        """0: no op of a U-Net level is a parameter-free skip to collapse to (all convolve)."""
        return 0
