"""The ``ofa`` model: a MobileNetV3-style chain of inverted-residual blocks, and Once-for-All's
elastic supernet over it (Cai et al., "Once-for-All: Train One Network and Specialize it for
Efficient Deployment", ICLR 2020).

An architecture is ``{stem_channels, resolution, stages: {name: {channels, stride, blocks:
[{kernel, expand}, ...]}}}``: the input is resized by ``resolution`` (a scale), a 3x3 stem, then
per stage its blocks (the first one strided), global pooling and a linear classifier. ``build``
makes one such network stand-alone (torchvision's ``InvertedResidual`` blocks, Hardswish, no
squeeze-excite); ``ElasticSupernet`` holds every architecture of a space in one set of weights:

- elastic kernel: each depthwise convolution keeps the largest kernel; a smaller one is its
  centre, passed through a learned kernel-transformation matrix per step down (7 -> 5 -> 3);
- elastic depth: a stage runs its first ``d`` blocks;
- elastic width: a block's expand ratio keeps its first ``c_in * e`` hidden channels, which
  ``sort_channels`` orders by importance (L1 norm) before width is shrunk;
- elastic resolution: the input is resized by the chosen scale.

``extract(arch)`` copies the active weights into a stand-alone network that computes what the
supernet computes with ``use(arch)``. Written here because no maintained library has OFA's
dynamic layers (the reference implementation, mit-han-lab/once-for-all, is not a package one
can depend on, and its layers are ImageNet-sized and CUDA-bound).
"""

from __future__ import annotations

import random
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.mobilenetv3 import InvertedResidual, InvertedResidualConfig
from torchvision.ops.misc import Conv2dNormActivation

from raynas.errors import ConfigError, SpaceError
from raynas.ops.blocks import Unit
from raynas.space.nodes import Group, Repeat
from raynas.space.space import Space

Arch = dict[str, Any]
BLOCK_FIELDS = ("kernel", "expand")
STAGE_FIELDS = ("channels", "stride", "blocks")
DIVISOR = 8  # torchvision's inverted residual rounds channels to multiples of 8


# --- the stand-alone network ---------------------------------------------------------------
def resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    """The input at ``scale`` times its size (bilinear), as OFA feeds each sub-network its own
    resolution; scale 1 is the input itself."""
    if scale == 1:
        return x
    size = [max(1, round(s * scale)) for s in x.shape[2:]]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class Resize(nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize(x, self.scale)


def stem(c_in: int, c_out: int) -> nn.Module:
    return Conv2dNormActivation(c_in, c_out, 3, 1, activation_layer=nn.Hardswish)


def head(c_in: int, num_classes: int) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))


def layout(arch: Arch) -> list[tuple[int, int, int, int, int]]:
    """Every block of ``arch`` as ``(c_in, c_out, stride, kernel, expand)``."""
    blocks, c_in = [], arch["stem_channels"]
    for stage in arch["stages"].values():
        for i, block in enumerate(stage["blocks"]):
            blocks.append((c_in, stage["channels"], stage["stride"] if i == 0 else 1,
                           block["kernel"], block["expand"]))
            c_in = stage["channels"]
    return blocks


def inverted_residual(c_in: int, c_out: int, stride: int, kernel: int,
                      expand: int) -> nn.Module:
    """MobileNetV3's block: 1x1 expand, depthwise kernel x kernel, 1x1 project (no SE)."""
    config = InvertedResidualConfig(c_in, kernel, c_in * expand, c_out, False, "HS", stride, 1,
                                    1.0)
    return InvertedResidual(config, nn.BatchNorm2d)


class OFANet(nn.Module):
    """One architecture of an ``ofa`` space, stand-alone."""

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.resize = Resize(arch["resolution"])
        self.stem = stem(input_shape[0], arch["stem_channels"])
        self.blocks = nn.Sequential(*(inverted_residual(*b) for b in layout(arch)))
        last = list(arch["stages"].values())[-1]["channels"]
        self.head = head(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(self.resize(x))))


# --- the builder protocol (``raynas.models.BUILDERS``) ---------------------------------------
def build(arch: Arch, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if len(input_shape) != 3:
        raise SpaceError(f"ofa model: inputs must be images (C, H, W), got {input_shape}")
    return OFANet(arch, input_shape, num_classes)


def check(space: Space, origin: str) -> None:
    """The space is an ``ofa`` space: scale choices in (0, 1], channel and stride constants,
    per stage a repeated block of kernel (odd) and expand (>= 1) choices."""

    def fail(field: str, message: str) -> SpaceError:
        return SpaceError(f"{origin}: space.{field}: {message}")

    def positive(field: str, kind: type = int) -> list[Any]:
        values = space.values(field)
        if values is None or any(not isinstance(v, kind) or isinstance(v, bool) or v <= 0
                                 for v in values):
            raise fail(field, f"must be positive {'integers' if kind is int else 'numbers'}")
        return values

    if any(v > 1 for v in positive("resolution", int | float)):
        raise fail("resolution", "a scale of the input size, in (0, 1]")
    if any(v % DIVISOR for v in positive("stem_channels")):
        raise fail("stem_channels", f"must be multiples of {DIVISOR}")
    stages = space.domain("stages")
    if not isinstance(stages, Group) or not stages.fields:
        raise fail("stages", "the ofa model needs 'stages: {NAME: {channels, stride, blocks}}'")
    for name, _ in stages.fields:
        where = f"stages.{name}"
        missing = [f for f in STAGE_FIELDS if space.domain(f"{where}.{f}") is None]
        if missing:
            raise fail(where, f"missing {', '.join(missing)}")
        for field in ("channels", "stride"):
            values = positive(f"{where}.{field}")
            if len(values) > 1:
                raise fail(f"{where}.{field}", "a constant (OFA keeps a stage's width and "
                                               "stride fixed)")
        if space.values(f"{where}.channels")[0] % DIVISOR:
            raise fail(f"{where}.channels", f"must be a multiple of {DIVISOR}")
        blocks = space.domain(f"{where}.blocks")
        if not isinstance(blocks, Repeat) or blocks.min < 1:
            raise fail(f"{where}.blocks", "needs 'repeat: [MIN, MAX]' (MIN >= 1) of a block")
        for field in BLOCK_FIELDS:
            values = positive(f"{where}.blocks.{field}")
            if field == "kernel" and any(k % 2 == 0 for k in values):
                raise fail(f"{where}.blocks.kernel", "kernel sizes must be odd")


def latency_units(arch: Arch, input_shape: tuple[int, ...], num_classes: int) -> list[Unit]:
    """The parts of ``OFANet(arch)`` for the latency table, with their input shapes."""
    c, *size = input_shape
    units = []
    if arch["resolution"] != 1:
        units.append(Unit(f"resize:{'x'.join(map(str, input_shape))}*{arch['resolution']}",
                          partial(Resize, arch["resolution"]), tuple(input_shape)))
        size = [max(1, round(s * arch["resolution"])) for s in size]
    units.append(Unit(f"ofa-stem:{c}x{'x'.join(map(str, size))}>{arch['stem_channels']}",
                      partial(stem, c, arch["stem_channels"]), (c, *size)))
    for c_in, c_out, stride, kernel, expand in layout(arch):
        units.append(Unit(f"mbconv:{c_in}x{'x'.join(map(str, size))}>{c_out}/k{kernel}"
                          f"e{expand}s{stride}",
                          partial(inverted_residual, c_in, c_out, stride, kernel, expand),
                          (c_in, *size)))
        size = [(s - 1) // stride + 1 for s in size]
        c = c_out
    units.append(Unit(f"ofa-head:{c}x{'x'.join(map(str, size))}>{num_classes}",
                      partial(head, c, num_classes), (c, *size)))
    return units


# --- what an ofa space lets vary -----------------------------------------------------------
class Choices:
    """The elastic dimensions of an ``ofa`` space: the resolutions, and per stage its depths,
    kernel sizes and expand ratios. ``arch(...)`` composes an architecture from them."""

    def __init__(self, space: Space) -> None:
        check_ofa_space(space)
        self.space = space
        self.template = space.sample(random.Random(0))
        self.resolutions = sorted(space.values("resolution"))
        self.stages: dict[str, dict[str, list[int]]] = {}
        for name in self.template["stages"]:
            blocks = space.domain(f"stages.{name}.blocks")
            self.stages[name] = {
                "depth": list(range(blocks.min, blocks.max + 1)),
                "kernel": sorted(space.values(f"stages.{name}.blocks.kernel")),
                "expand": sorted(space.values(f"stages.{name}.blocks.expand"))}

    def arch(self, pick: Any) -> Arch:
        """An architecture whose every elastic value is ``pick(options, what)``, ``what`` one
        of ``resolution``, ``depth``, ``kernel``, ``expand`` (e.g. ``max``, or a sampler)."""
        stages = {}
        for name, options in self.stages.items():
            depth = pick(options["depth"], "depth")
            stages[name] = {**self.template["stages"][name], "blocks": [
                {"kernel": pick(options["kernel"], "kernel"),
                 "expand": pick(options["expand"], "expand")} for _ in range(depth)]}
        return self.space.validate({**self.template, "stages": stages,
                                    "resolution": pick(self.resolutions, "resolution")})

    def largest(self) -> Arch:
        return self.arch(lambda options, what: max(options))

    def smallest(self) -> Arch:
        return self.arch(lambda options, what: min(options))


def check_ofa_space(space: Space) -> None:
    if space.model != "ofa":
        raise ConfigError(f"--space {space.name}: Once-for-All needs an ofa space (model ofa, "
                          f"e.g. ofa_mbv3), not model {space.model!r}")


# --- the elastic supernet ------------------------------------------------------------------
class ElasticBatchNorm(nn.BatchNorm2d):
    """BatchNorm over the first ``C`` channels of its input (an elastic width's): the running
    statistics and affine parameters are sliced. nn.BatchNorm2d has no channel subset, so the
    momentum bookkeeping of ``_BatchNorm.forward`` is repeated here (``None``: a cumulative
    average, as ``recalibrate`` uses)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        factor = self.momentum or 0.0
        if self.training:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c],
                            self.bias[:c], self.training, factor, self.eps)


def kernel_steps(kernels: list[int]) -> list[tuple[int, int]]:
    """Largest to smallest: (7, 5), (5, 3) for kernels 3, 5, 7."""
    ordered = sorted(kernels, reverse=True)
    return list(zip(ordered, ordered[1:], strict=False))


class ElasticBlock(nn.Module):
    """An inverted residual at its largest (kernel, expand), running any smaller one."""

    def __init__(self, c_in: int, c_out: int, stride: int, kernels: list[int],
                 expands: list[int]) -> None:
        super().__init__()
        self.c_in, self.stride = c_in, stride
        self.max_kernel, hidden = max(kernels), c_in * max(expands)
        self.expand = nn.Conv2d(c_in, hidden, 1, bias=False)
        self.expand_bn = ElasticBatchNorm(hidden)
        self.depthwise = nn.Conv2d(hidden, hidden, self.max_kernel, stride,
                                   self.max_kernel // 2, groups=hidden, bias=False)
        self.depthwise_bn = ElasticBatchNorm(hidden)
        self.project = nn.Conv2d(hidden, c_out, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(c_out)
        self.act = nn.Hardswish()
        self.residual = stride == 1 and c_in == c_out
        self.steps = kernel_steps(kernels)
        # OFA's kernel transformation matrices, one per step down, shared by the channels and
        # starting as the identity (the centre as it is).
        self.transforms = nn.ParameterDict({f"{a}to{b}": nn.Parameter(torch.eye(b * b))
                                            for a, b in self.steps})
        self.kernel, self.expand_ratio = self.max_kernel, max(expands)

    def hidden(self) -> int:
        return self.c_in * self.expand_ratio

    def kernel_weight(self) -> torch.Tensor:
        """The active depthwise kernel of the active channels: the centre of the largest, each
        step down transformed by its matrix."""
        weight = self.depthwise.weight[: self.hidden()]
        for big, small in self.steps:
            if weight.shape[-1] == self.kernel:
                break
            start = (big - small) // 2
            centre = weight[:, :, start : start + small, start : start + small]
            weight = (centre.reshape(len(weight), small * small)
                      @ self.transforms[f"{big}to{small}"]).reshape(len(weight), 1, small, small)
        return weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.hidden()
        h = self.act(self.expand_bn(F.conv2d(x, self.expand.weight[:hidden])))
        h = self.act(self.depthwise_bn(F.conv2d(h, self.kernel_weight(), None, self.stride,
                                                self.kernel // 2, 1, hidden)))
        h = self.project_bn(F.conv2d(h, self.project.weight[:, :hidden]))
        return x + h if self.residual else h

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Reorder the hidden channels by importance, the L1 norm of each one's weights in the
        projection (OFA's ``re_organize_middle_weights``), so a narrower width keeps the most
        important ones. The full-width block computes the same function after the sort."""
        order = self.project.weight.abs().sum(dim=(0, 2, 3)).argsort(descending=True)
        for param in (self.expand.weight, self.depthwise.weight):
            param.copy_(param[order])
        self.project.weight.copy_(self.project.weight[:, order])
        for bn in (self.expand_bn, self.depthwise_bn):
            for tensor in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                tensor.copy_(tensor[order])

    @torch.no_grad()
    def copy_to(self, block: InvertedResidual) -> None:
        """Put the active weights into a stand-alone block of the same (kernel, expand)."""
        hidden = self.hidden()
        expand, depthwise, project = block.block
        expand[0].weight.copy_(self.expand.weight[:hidden])
        depthwise[0].weight.copy_(self.kernel_weight())
        project[0].weight.copy_(self.project.weight[:, :hidden])
        for source, target in ((self.expand_bn, expand[1]), (self.depthwise_bn, depthwise[1]),
                               (self.project_bn, project[1])):
            c = target.num_features
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(target, name).copy_(getattr(source, name)[:c])
            target.num_batches_tracked.copy_(source.num_batches_tracked)


class ElasticSupernet(nn.Module):
    """Every architecture of an ``ofa`` space in one network. ``use(arch)`` sets the active
    sub-network (kernel, expand per block, depth per stage, resolution)."""

    #: Progressive shrinking's phases (``raynas.ofa.shrinking``) and what each samples; the
    #: resolution is sampled in every phase, the largest network's too.
    PHASES = {"full": (), "kernel": ("kernel",), "depth": ("kernel", "depth"),
              "width": ("kernel", "depth", "expand")}
    ALWAYS = ("resolution",)
    #: Adam (not OFA's SGD at ImageNet scale): on the small built-in data it trains reliably
    #: without tuning; the shrinking phases (every one after ``full``) use a lower rate, as OFA's.
    LR = {"full": 3e-3, "shrinking": 1e-3}

    def __init__(self, space: Space, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.choices = Choices(space)
        self.space, self.input_shape, self.num_classes = space, input_shape, num_classes
        largest = self.choices.largest()
        self.stem = stem(input_shape[0], largest["stem_channels"])
        self.stages = nn.ModuleList()
        c_in = largest["stem_channels"]
        for name, stage in largest["stages"].items():
            options = self.choices.stages[name]
            blocks = []
            for i in range(len(stage["blocks"])):
                blocks.append(ElasticBlock(c_in, stage["channels"],
                                           stage["stride"] if i == 0 else 1,
                                           options["kernel"], options["expand"]))
                c_in = stage["channels"]
            self.stages.append(nn.ModuleList(blocks))
        self.head = head(c_in, num_classes)
        self.use(largest)

    def use(self, arch: Arch) -> ElasticSupernet:
        """Run ``arch`` from now on."""
        self.arch = self.space.validate(arch)
        self.depths = []
        for blocks, stage in zip(self.stages, self.arch["stages"].values(), strict=True):
            self.depths.append(len(stage["blocks"]))
            for block, spec in zip(blocks, stage["blocks"], strict=False):
                block.kernel, block.expand_ratio = spec["kernel"], spec["expand"]
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(resize(x, self.arch["resolution"]))
        for blocks, depth in zip(self.stages, self.depths, strict=True):
            for block in blocks[:depth]:
                x = block(x)
        return self.head(x)

    def active_blocks(self) -> list[ElasticBlock]:
        return [b for blocks, d in zip(self.stages, self.depths, strict=True) for b in blocks[:d]]

    @torch.no_grad()
    def extract(self, arch: Arch) -> OFANet:
        """``arch`` as a stand-alone network with the supernet's weights: in eval mode it
        computes what the supernet computes with ``use(arch)``."""
        self.use(arch)
        net = OFANet(self.arch, self.input_shape, self.num_classes).to(self.stem[0].weight.device)
        net.stem.load_state_dict(self.stem.state_dict())
        net.head.load_state_dict(self.head.state_dict())
        for elastic, block in zip(self.active_blocks(), net.blocks, strict=True):
            elastic.copy_to(block)
        return net

    def start_phase(self, phase: str) -> None:
        """Before ``width``, the hidden channels are sorted by importance."""
        if phase == "width":
            self.sort_channels()

    def sort_channels(self) -> None:
        for blocks in self.stages:
            for block in blocks:
                block.sort_channels()
