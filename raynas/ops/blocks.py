"""The core ops' modules and factories (``raynas.ops`` registers them as ``Op``s): the same
factory builds 1-D (``Conv1d``, for sequences shaped N, C, L), 2-D (``Conv2d``, for images shaped
N, C, H, W) and 3-D (``Conv3d``, for volumes shaped N, C, D, H, W) modules. Conv-BN-ReLU blocks
are torchvision's ``ConvNormActivation``; only what torchvision lacks (a 1-D variant of its
block, the ``zero`` op) is written here. The medical ops (``3d_*``, ``attention_gate``,
``multi_scale_fusion``) are MONAI blocks, imported when one is built, so raynas imports without
the ``medical`` extra.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation, Conv3dNormActivation, ConvNormActivation

from raynas.errors import SpaceError


class Conv1dNormActivation(ConvNormActivation):
    """torchvision ships 2-D and 3-D Conv-Norm-Activation blocks; this is the 1-D one."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, **kwargs) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         norm_layer=nn.BatchNorm1d, conv_layer=nn.Conv1d, **kwargs)


@dataclass(frozen=True)
class Dims:
    """The layer types for 1-D, 2-D or 3-D inputs."""

    conv_norm_act: type[ConvNormActivation]
    max_pool: type[nn.Module]
    avg_pool: type[nn.Module]
    adaptive_avg_pool: type[nn.Module]


DIMS = {
    1: Dims(Conv1dNormActivation, nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d),
    2: Dims(Conv2dNormActivation, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d),
    3: Dims(Conv3dNormActivation, nn.MaxPool3d, nn.AvgPool3d, nn.AdaptiveAvgPool3d),
}

def projection(c_in: int, c_out: int, stride: int, dims: int) -> nn.Module:
    """Match channels/resolution for a shortcut: identity if nothing changes, else a 1x1 conv."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return DIMS[dims].conv_norm_act(c_in, c_out, 1, stride, activation_layer=None)


def conv(c_in: int, c_out: int, stride: int, dims: int, *, k: int) -> nn.Module:
    return DIMS[dims].conv_norm_act(c_in, c_out, k, stride)


def dw_conv(c_in: int, c_out: int, stride: int, dims: int, *, k: int) -> nn.Module:
    """Depthwise-separable convolution (MobileNet): depthwise k x k, then pointwise 1 x 1."""
    block = DIMS[dims].conv_norm_act
    return nn.Sequential(block(c_in, c_in, k, stride, groups=c_in), block(c_in, c_out, 1))


def pool(c_in: int, c_out: int, stride: int, dims: int, *, kind: str) -> nn.Module:
    d = DIMS[dims]
    layer = (
        d.max_pool(3, stride, 1)
        if kind == "max"
        else d.avg_pool(3, stride, 1, count_include_pad=False)
    )
    if c_in == c_out:
        return layer
    return nn.Sequential(layer, d.conv_norm_act(c_in, c_out, 1))


class Zero(nn.Module):
    """The ``zero`` op (no connection): zeros of the output shape, as in DARTS/NAS-Bench-201."""

    def __init__(self, c_out: int, stride: int) -> None:
        super().__init__()
        self.c_out, self.stride = c_out, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        strided = x[(..., *[slice(None, None, self.stride)] * (x.dim() - 2))]
        return strided.new_zeros((x.shape[0], self.c_out, *strided.shape[2:]))


def zero(c_in: int, c_out: int, stride: int, dims: int) -> nn.Module:
    return Zero(c_out, stride)


def monai_blocks():
    """``monai.networks.blocks``, or a one-line error naming the extra that installs it."""
    try:
        from monai.networks import blocks
    except ImportError:
        raise SpaceError("the medical ops and models need MONAI: pip install 'raynas[medical]'"
                         ) from None
    return blocks


def monai_conv(c_in: int, c_out: int, stride: int, dims: int, *, k: int) -> nn.Module:
    """k x k x k convolution, batch norm, ReLU: MONAI's ``Convolution``."""
    return monai_blocks().Convolution(dims, c_in, c_out, strides=stride, kernel_size=k,
                                      act="RELU", norm="BATCH")


def pool_2x2x2(c_in: int, c_out: int, stride: int, dims: int, *, kind: str) -> nn.Module:
    """2 x 2 x 2 pooling. Stride 2 halves the volume (rounding up, as the builders count);
    stride 1 pads one voxel at the far side so the size stays."""
    d = DIMS[dims]
    layer = d.max_pool(2, stride, ceil_mode=True) if kind == "max" else d.avg_pool(
        2, stride, ceil_mode=True)
    if stride == 1:
        layer = nn.Sequential(nn.ReplicationPad3d((0, 1) * dims), layer)
    if c_in == c_out:
        return layer
    return nn.Sequential(layer, d.conv_norm_act(c_in, c_out, 1))


def residual_unit(c_in: int, c_out: int, stride: int, dims: int) -> nn.Module:
    """``skip_connection_3d``: two convolutions and a (projected) residual shortcut, MONAI's
    ``ResidualUnit``."""
    return monai_blocks().ResidualUnit(dims, c_in, c_out, strides=stride, act="RELU",
                                       norm="BATCH")


def dense_unit(c_in: int, c_out: int, stride: int, dims: int) -> nn.Module:
    """``dense_connection_3d``: MONAI's ``ConvDenseBlock`` (each convolution sees the
    concatenation of the input and every earlier output), then a 1x1x1 projection to ``c_out``;
    stride 2 by a strided 1x1x1 projection first."""
    blocks = monai_blocks()
    growth = max(1, c_out // 2)
    parts = [] if stride == 1 else [DIMS[dims].conv_norm_act(c_in, c_in, 1, stride)]
    return nn.Sequential(*parts, blocks.ConvDenseBlock(dims, c_in, [growth, growth], act="RELU",
                                                       norm="BATCH"),
                         DIMS[dims].conv_norm_act(c_in + 2 * growth, c_out, 1))


class AttentionGate(nn.Module):
    """``attention_gate`` as a chain op: a 3x3x3 convolution whose output gates itself through
    MONAI's additive attention block (``AttentionUnet``'s gate, with the features as both the
    gating signal and the gated input), so the network learns where in the volume to look.
    The U-Net builder (``unet3d``) uses the same block on its skips, gated by the
    decoder."""

    def __init__(self, c_in: int, c_out: int, stride: int, dims: int) -> None:
        super().__init__()
        monai_blocks()  # MONAI installed, or the one-line error
        from monai.networks.nets.attentionunet import AttentionBlock

        self.conv = DIMS[dims].conv_norm_act(c_in, c_out, 3, stride)
        self.gate = AttentionBlock(dims, max(1, c_out // 2), c_out, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.gate(y, y)


class MultiScaleFusion(nn.Module):
    """``multi_scale_fusion``: the same input seen at full and at half resolution (3x3x3
    convolutions each, the coarse one upsampled back with MONAI's ``UpSample``), concatenated
    and fused by a 1x1x1 convolution, so one op combines fine detail and wider context."""

    def __init__(self, c_in: int, c_out: int, stride: int, dims: int) -> None:
        super().__init__()
        blocks, d = monai_blocks(), DIMS[dims]
        self.fine = d.conv_norm_act(c_in, c_out, 3, stride)
        self.coarse = nn.Sequential(d.avg_pool(2, 2, ceil_mode=True),
                                    d.conv_norm_act(c_in, c_out, 3, stride))
        self.up = blocks.UpSample(dims, c_out, c_out, scale_factor=2, mode="nontrainable",
                                  interp_mode="trilinear" if dims == 3 else "bilinear")
        self.fuse = d.conv_norm_act(2 * c_out, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fine = self.fine(x)
        coarse = self.up(self.coarse(x))[(..., *(slice(0, s) for s in fine.shape[2:]))]
        if coarse.shape[2:] != fine.shape[2:]:  # an odd size: upsampled one voxel short
            coarse = nn.functional.interpolate(coarse, size=fine.shape[2:])
        return self.fuse(torch.cat([fine, coarse], dim=1))


@dataclass(frozen=True)
class Unit:
    """One part of a network for the table: ``make()`` builds it, it takes ``input_shape``
    (without the batch), and runs ``count`` times per forward pass."""

    key: str
    make: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    count: int = 1
