"""Operation registry: op name -> factory ``(c_in, c_out, stride, dims) -> nn.Module``.

The same names build 1-D (``Conv1d``, for sequences shaped N, C, L) and 2-D (``Conv2d``, for
images shaped N, C, H, W) modules. Conv-BN-ReLU blocks are torchvision's ``ConvNormActivation``;
only what torchvision lacks (a 1-D variant of its block, the ``zero`` op) is written here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation, ConvNormActivation


class Conv1dNormActivation(ConvNormActivation):
    """torchvision ships 2-D and 3-D Conv-Norm-Activation blocks; this is the 1-D one."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, **kwargs) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         norm_layer=nn.BatchNorm1d, conv_layer=nn.Conv1d, **kwargs)


@dataclass(frozen=True)
class Dims:
    """The layer types for 1-D or 2-D inputs."""

    conv_norm_act: type[ConvNormActivation]
    max_pool: type[nn.Module]
    avg_pool: type[nn.Module]
    adaptive_avg_pool: type[nn.Module]


DIMS = {
    1: Dims(Conv1dNormActivation, nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d),
    2: Dims(Conv2dNormActivation, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d),
}

OpFactory = Callable[[int, int, int, int], nn.Module]


def projection(c_in: int, c_out: int, stride: int, dims: int) -> nn.Module:
    """Match channels/resolution for a shortcut: identity if nothing changes, else a 1x1 conv."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return DIMS[dims].conv_norm_act(c_in, c_out, 1, stride, activation_layer=None)


def conv(k: int) -> OpFactory:
    def make(c_in: int, c_out: int, stride: int, dims: int) -> nn.Module:
        return DIMS[dims].conv_norm_act(c_in, c_out, k, stride)

    return make


def dw_conv(k: int) -> OpFactory:
    """Depthwise-separable convolution (MobileNet): depthwise k x k, then pointwise 1 x 1."""

    def make(c_in: int, c_out: int, stride: int, dims: int) -> nn.Module:
        block = DIMS[dims].conv_norm_act
        return nn.Sequential(block(c_in, c_in, k, stride, groups=c_in), block(c_in, c_out, 1))

    return make


def pool(kind: str) -> OpFactory:
    def make(c_in: int, c_out: int, stride: int, dims: int) -> nn.Module:
        d = DIMS[dims]
        layer = (
            d.max_pool(3, stride, 1)
            if kind == "max"
            else d.avg_pool(3, stride, 1, count_include_pad=False)
        )
        if c_in == c_out:
            return layer
        return nn.Sequential(layer, d.conv_norm_act(c_in, c_out, 1))

    return make


class Zero(nn.Module):
    """The ``zero`` op (no connection): zeros of the output shape, as in DARTS/NAS-Bench-201."""

    def __init__(self, c_out: int, stride: int) -> None:
        super().__init__()
        self.c_out, self.stride = c_out, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        strided = x[(..., *[slice(None, None, self.stride)] * (x.dim() - 2))]
        return strided.new_zeros((x.shape[0], self.c_out, *strided.shape[2:]))


OPS: dict[str, OpFactory] = {
    "conv_3x3": conv(3),
    "conv_5x5": conv(5),
    "conv_7x7": conv(7),
    "dw_conv_3x3": dw_conv(3),
    "dw_conv_5x5": dw_conv(5),
    "max_pool_3x3": pool("max"),
    "avg_pool_3x3": pool("avg"),
    "identity": projection,
    "zero": lambda c_in, c_out, stride, dims: Zero(c_out, stride),
}


@dataclass(frozen=True)
class Unit:
    """One part of a network for the table: ``make()`` builds it, it takes ``input_shape``
    (without the batch), and runs ``count`` times per forward pass."""

    key: str
    make: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    count: int = 1
