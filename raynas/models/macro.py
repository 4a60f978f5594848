"""The macro (chain) network: a stem, a searched list of layers, global pooling, a classifier.

Each layer is ``{op, channels, stride, connection}``. Connections:

- ``series``   — ``y = op(x)``;
- ``skip``     — ``y = op(x) + shortcut(x)`` (residual; 1x1 projection on a shape change);
- ``dense``    — ``y = op(concat(all earlier outputs))`` (DenseNet-style; earlier outputs are
  average-pooled to the current resolution before concatenation);
- ``parallel`` — ``y = op(x) + op'(x)``: two branches of the same op with separate weights.

Any valid architecture builds: a stride never shrinks a feature map below one element (it
becomes 1 there), and shortcuts project channels/resolution when they differ.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from torch import nn

from raynas.errors import SpaceError, did_you_mean
from raynas.ops import ALL_OPS, DIMS, VOLUMETRIC, Unit, monai_blocks, projection
from raynas.space.nodes import Group, Repeat
from raynas.space.space import Space

CONNECTIONS = ("series", "skip", "dense", "parallel")
LAYER_FIELDS = ("op", "channels", "stride", "connection")
DEFAULT_STEM_CHANNELS = 16


class Layer(nn.Module):
    def __init__(self, spec: dict[str, Any], c_in: int, c_history: list[int], stride: int,
                 dims: int) -> None:
        super().__init__()
        self.connection = spec["connection"]
        c_out = spec["channels"]
        op_in = sum(c_history) if self.connection == "dense" else c_in
        self.op = ALL_OPS[spec["op"]](op_in, c_out, stride, dims)
        self.pool = DIMS[dims].adaptive_avg_pool
        if self.connection == "skip":
            self.side = projection(c_in, c_out, stride, dims)
        elif self.connection == "parallel":
            self.side = ALL_OPS[spec["op"]](c_in, c_out, stride, dims)

    def forward(self, history: list[torch.Tensor]) -> torch.Tensor:
        x = history[-1]
        if self.connection == "dense":
            size = x.shape[2:]
            resized = [h if h.shape[2:] == size else self.pool(size)(h) for h in history]
            return self.op(torch.cat(resized, dim=1))
        y = self.op(x)
        return y + self.side(x) if self.connection in ("skip", "parallel") else y


class MacroNet(nn.Module):
    """A chain of searched layers for inputs shaped (C, L), (C, H, W) or (C, D, H, W)."""

    def __init__(self, arch: dict[str, Any], input_shape: tuple[int, ...], num_classes: int,
                 width: float = 1.0):
        super().__init__()
        dims = len(input_shape) - 1
        if dims not in DIMS:
            raise SpaceError(f"macro model: inputs must be (C, L), (C, H, W) or (C, D, H, W), "
                             f"got {input_shape}")

        def scaled(channels: int) -> int:  # a width multiplier keeps at least one channel
            return max(1, round(channels * width))

        stem = scaled(arch.get("stem_channels", DEFAULT_STEM_CHANNELS))
        self.stem = DIMS[dims].conv_norm_act(input_shape[0], stem, 3, 1)
        size = min(input_shape[1:])
        channels, reductions = [stem], [1]
        layers = []
        for spec in arch["layers"]:
            spec = {**spec, "channels": scaled(spec["channels"])}
            stride = spec["stride"] if size > 1 else 1
            layers.append(Layer(spec, channels[-1], channels, stride, dims))
            size = math.ceil(size / stride)
            channels.append(spec["channels"])
            reductions.append(reductions[-1] * stride)
        self.layers = nn.ModuleList(layers)
        #: Of the stem's output and each layer's (``features``): channels, and how many times
        #: smaller than the input it is along each side.
        self.channels, self.reductions = channels, reductions
        # No classifier for num_classes=0: the chain is a detector's backbone (``features``).
        self.head = nn.Sequential(
            DIMS[dims].adaptive_avg_pool(1), nn.Flatten(), nn.Linear(channels[-1], num_classes)
        ) if num_classes else None

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stem's output and every layer's, in order."""
        history = [self.stem(x)]
        for layer in self.layers:
            history.append(layer(history))
        return history

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[-1])


def check(space: Space, origin: str) -> None:
    """Every value the space can produce for a layer must be buildable."""

    def finite(field: str) -> list[Any]:
        options = space.values(field)
        if options is None:
            raise SpaceError(f"{origin}: space.{field}: must be a constant, a choice or an int "
                             "range")
        return options

    def fail(field: str, message: str) -> SpaceError:
        return SpaceError(f"{origin}: space.{field}: {message}")

    layers = space.domain("layers")
    if not isinstance(layers, Repeat) or not isinstance(layers.block, Group):
        raise fail("layers", "the macro model needs 'layers: {repeat: [min, max], block: {...}}'")
    for field in LAYER_FIELDS:
        if space.domain(f"layers.{field}") is None:
            raise fail(f"layers.block.{field}",
                       "missing (a layer needs op, channels, stride and connection)")
    for op in finite("layers.op"):
        if op not in ALL_OPS:
            raise fail("layers.block.op", f"unknown op {op!r}{did_you_mean(op, ALL_OPS)}; "
                       f"known ops: {', '.join(ALL_OPS)}")
    if VOLUMETRIC & set(finite("layers.op")):
        monai_blocks()  # the medical ops are MONAI's: a one-line error if it is missing
    for conn in finite("layers.connection"):
        if conn not in CONNECTIONS:
            raise fail("layers.block.connection", f"unknown connection {conn!r}"
                       f"{did_you_mean(conn, CONNECTIONS)}; known: {', '.join(CONNECTIONS)}")
    for field in ("layers.channels", "layers.stride", "stem_channels"):
        if space.domain(field) is None:
            continue
        for v in finite(field):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise fail(field, f"must be positive integers, got {v!r}")


def build(arch: dict[str, Any], input_shape: tuple[int, ...], num_classes: int,
          width: float = 1.0) -> nn.Module:
    return MacroNet(arch, input_shape, num_classes, width)


class _Sum(nn.Module):
    """Stands in for a connection's ``y + side(x)`` in the latency table."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x


class _Concat(nn.Module):
    """Stands in for a dense layer's concatenation of its inputs in the latency table."""

    def __init__(self, parts: list[int]) -> None:
        super().__init__()
        self.parts = parts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(x.split(self.parts, dim=1), dim=1)


def latency_units(arch: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> list:
    """The parts of ``MacroNet(arch)`` for the latency table (``raynas.objectives.latency``),
    with the shapes the network gives them: the stem, each layer's op (twice for ``parallel``), its
    shortcut projection and sum, a dense layer's pooling and concatenation, the head."""
    dims = len(input_shape) - 1
    d = DIMS[dims]

    def shape(*dims: int) -> str:
        return "x".join(map(str, dims))

    stem = arch.get("stem_channels", DEFAULT_STEM_CHANNELS)
    spatial = tuple(input_shape[1:])
    units = [Unit(f"stem:{shape(*input_shape)}>{stem}",
                  partial(d.conv_norm_act, input_shape[0], stem, 3, 1), tuple(input_shape))]
    channels, sizes = [stem], [spatial]
    for spec in arch["layers"]:
        op, c_out, conn = spec["op"], spec["channels"], spec["connection"]
        stride = spec["stride"] if min(spatial) > 1 else 1
        c_in = sum(channels) if conn == "dense" else channels[-1]
        if conn == "dense":
            for c, size in zip(channels, sizes, strict=True):
                if size != spatial:
                    units.append(Unit(f"pool:{shape(c, *size)}>{shape(*spatial)}",
                                      partial(d.adaptive_avg_pool, spatial), (c, *size)))
            units.append(Unit(f"concat:{'+'.join(map(str, channels))}@{shape(*spatial)}",
                              partial(_Concat, list(channels)), (c_in, *spatial)))
        units.append(Unit(f"{op}:{shape(c_in, *spatial)}>{c_out}/s{stride}",
                          partial(ALL_OPS[op], c_in, c_out, stride, dims), (c_in, *spatial),
                          2 if conn == "parallel" else 1))
        out = tuple(math.ceil(s / stride) for s in spatial)
        if conn == "skip":
            units.append(Unit(f"projection:{shape(c_in, *spatial)}>{c_out}/s{stride}",
                              partial(projection, c_in, c_out, stride, dims), (c_in, *spatial)))
        if conn in ("skip", "parallel"):
            units.append(Unit(f"sum:{shape(c_out, *out)}", _Sum, (c_out, *out)))
        channels.append(c_out)
        sizes.append(out)
        spatial = out
    units.append(Unit(f"head:{shape(channels[-1], *spatial)}>{num_classes}",
                      partial(lambda c: nn.Sequential(d.adaptive_avg_pool(1), nn.Flatten(),
                                                      nn.Linear(c, num_classes)), channels[-1]),
                      (channels[-1], *spatial)))
    return units
