"""The macro (chain) network: a stem, a searched list of layers, global pooling, a classifier.

Each layer is ``{op, channels, stride, connection}``. Connections:

- ``series``   — ``y = op(x)``;
- ``skip``     — ``y = op(x) + shortcut(x)`` (residual; 1x1 projection on a shape change);
- ``dense``    — ``y = op(concat(all earlier outputs))`` (DenseNet-style; earlier outputs are
  average-pooled to the current resolution before concatenation);
- ``parallel`` — ``y = op(x) + op'(x)``: two branches of the same op with separate weights.

Any valid architecture builds: a stride never shrinks a feature map below one element (it
becomes 1 there), and shortcuts project channels/resolution when they differ.

Padding: in a sequence (1-D input), a position that is NaN in every channel is padding (a
variable-length series padded to the longest; ``raynas.data``). The network turns it into a
mask first thing, so the model's input alone says which steps are real: the same tensor trains,
evaluates, is logged with MLflow and exported, with no second input. Padded positions are zero
after every layer, the ops that declare ``Op.masked`` (attention, recurrence) are given the
mask, and the global pooling averages the real positions only, so padding changes nothing of
the logits. Images and volumes are never padded: there the masks would be all False and cost a
pass over every layer's features, so they have none (a training step of 12 random ``macro_cnn``
networks on digits: a median 6 % faster without them, nothing measurable on the largest;
2026-12-07).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from torch import nn

from raynas.errors import SpaceError, did_you_mean, show
from raynas.ops import OPS
from raynas.ops.blocks import DIMS, Unit, projection
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
        self.masked = OPS[spec["op"]].masked
        self.op = OPS[spec["op"]](op_in, c_out, stride, dims)
        self.pool = DIMS[dims].adaptive_avg_pool
        if self.connection == "skip":
            self.side = projection(c_in, c_out, stride, dims)
        elif self.connection == "parallel":
            self.side = OPS[spec["op"]](c_in, c_out, stride, dims)

    def forward(self, history: list[torch.Tensor], pad: torch.Tensor | None) -> torch.Tensor:
        x = history[-1]
        if self.connection == "dense":
            size = x.shape[2:]
            x = torch.cat([h if h.shape[2:] == size else self.pool(size)(h) for h in history],
                          dim=1)
        y = self.call(self.op, x, pad)
        if self.connection in ("skip", "parallel"):
            y = y + (self.call(self.side, x, pad) if self.connection == "parallel"
                     else self.side(x))
        return y

    def call(self, op: nn.Module, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        return op(x, pad) if self.masked else op(x)


def padding(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` with its padding (positions NaN in every channel) zeroed, and the padding mask
    (N, *spatial), True where padded. Any other NaN (a missing value) becomes 0, the training
    mean of normalised data."""
    pad = torch.isnan(x).all(dim=1)
    return torch.nan_to_num(x, nan=0.0), pad


def masked(x: torch.Tensor, pad: torch.Tensor | None
           ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features with zeros at padded positions, and the mask resized to them (``x`` as it is
    where nothing is padding)."""
    if pad is None:
        return x, None
    pad = resized(pad, tuple(x.shape[2:]))
    return x.masked_fill(pad[:, None], 0.0), pad


def resized(pad: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """The padding mask of features of ``size``: an op of stride s computes position i from
    the input around i * s (a patch: from i * s on), and padding sits at the end, so that
    input position says whether position i is padding."""
    for axis, (before, after) in enumerate(zip(pad.shape[1:], size, strict=True), start=1):
        if before != after:
            stride = -(-before // after)
            index = (torch.arange(after, device=pad.device) * stride).clamp(max=before - 1)
            pad = pad.index_select(axis, index)
    return pad


class MaskedPool(nn.Module):
    """Global average pooling over the real (unpadded) positions, then the classifier."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        if pad is None:  # nothing is padding
            return self.linear(x.flatten(2).mean(2))
        keep = (~pad).flatten(1).to(x.dtype)[:, None]  # N, 1, positions
        total = (x.flatten(2) * keep).sum(2)  # no matmul: the FLOPs are a plain pooling's
        return self.linear(total / keep.sum(2).clamp(min=1.0))


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
        self.head = MaskedPool(channels[-1], num_classes) if num_classes else None

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stem's output and every layer's, in order."""
        return self.masked_features(x)[0]

    def masked_features(self, x: torch.Tensor
                        ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """``features``, and the padding mask of the last (see ``padding``; None for an image
        or a volume, never padded)."""
        x, pad = padding(x) if x.dim() == 3 else (x, None)
        y, pad = masked(self.stem(x), pad)
        history = [y]
        for layer in self.layers:
            y, pad = masked(layer(history, pad), pad)
            history.append(y)
        return history, pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        history, pad = self.masked_features(x)
        return self.head(history[-1], pad)


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
    ops = finite("layers.op")
    for op in ops:
        if op not in OPS:
            raise fail("layers.block.op", f"unknown op {show(op)}{did_you_mean(op, OPS)}; "
                       f"known ops: {', '.join(OPS)}")
        OPS[op].check()  # e.g. the medical ops are MONAI's: a one-line error if it is missing
    for conn in finite("layers.connection"):
        if conn not in CONNECTIONS:
            raise fail("layers.block.connection", f"unknown connection {show(conn)}"
                       f"{did_you_mean(conn, CONNECTIONS)}; known: {', '.join(CONNECTIONS)}")
    for field in ("layers.channels", "layers.stride", "stem_channels"):
        if space.domain(field) is None:
            continue
        for v in finite(field):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise fail(field, f"must be positive integers, got {show(v)}")
    for op in ops:  # e.g. attention: the channels split evenly into its heads
        multiple = OPS[op].multiple
        for v in finite("layers.channels"):
            if v % multiple:
                raise fail("layers.channels", f"{v} is not divisible by the {multiple} heads of "
                           f"op {op!r} (the channels are its embedding dim)")


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
                          partial(OPS[op], c_in, c_out, stride, dims), (c_in, *spatial),
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
