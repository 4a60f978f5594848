"""Every op and connection builds, runs forward and backward, for 1-D and 2-D inputs, at the
extremes of the macro space (1 and 10 layers, 16 and 512 channels, strides that would shrink
the input below one pixel)."""

from __future__ import annotations

import random

import pytest
import torch

from raynas.estimation import load_space
from raynas.models import build_model
from raynas.models.macro import CONNECTIONS

MACRO = load_space("macro_cnn")
SHAPES = {"2d": (1, 8, 8), "1d": (3, 12)}


def arch(layers: list[dict]) -> dict:
    return MACRO.validate({"space": "macro_cnn", "stem_channels": 16, "layers": layers,
                           "train": {"lr": 0.01, "weight_decay": 1e-4, "batch_size": 32,
                                     "optimizer": "adam"}})


def forward_backward(a: dict, shape: tuple[int, ...], classes: int = 10) -> torch.Tensor:
    model = build_model(MACRO, a, shape, classes)
    x = torch.randn(4, *shape)
    out = model(x)
    assert out.shape == (4, classes)
    out.sum().backward()
    return out


@pytest.mark.parametrize("dims", SHAPES)
@pytest.mark.parametrize("connection", CONNECTIONS)
@pytest.mark.parametrize("op", MACRO.values("layers.op"))
def test_each_op_and_connection_builds_and_trains(op, connection, dims):
    layers = [{"op": "conv_3x3", "channels": 16, "stride": 1, "connection": "series"},
              {"op": op, "channels": 32, "stride": 2, "connection": connection},
              {"op": op, "channels": 32, "stride": 1, "connection": connection}]
    out = forward_backward(arch(layers), SHAPES[dims])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("dims", SHAPES)
def test_extremes_ten_strided_dense_layers_never_shrink_below_one(dims):
    layers = [{"op": "max_pool_3x3", "channels": 16, "stride": 2, "connection": "dense"}
              for _ in range(10)]
    forward_backward(arch(layers), SHAPES[dims])


@pytest.mark.parametrize("dims", SHAPES)
@pytest.mark.parametrize("op", ["conv_7x7", "dw_conv_5x5", "identity"])
def test_extremes_widest_layers(op, dims):
    layers = [{"op": op, "channels": 512, "stride": 1, "connection": "skip"},
              {"op": op, "channels": 16, "stride": 2, "connection": "parallel"}]
    forward_backward(arch(layers), SHAPES[dims])


def test_single_layer_network():
    forward_backward(arch([{"op": "zero", "channels": 16, "stride": 1, "connection": "series"}]),
                     SHAPES["2d"])


def test_random_architectures_build_for_both_input_ranks():
    rng = random.Random(7)
    for _ in range(25):
        a = MACRO.sample(rng)
        for shape in SHAPES.values():
            model = build_model(MACRO, a, shape, 3).eval()
            with torch.no_grad():
                assert model(torch.randn(2, *shape)).shape == (2, 3)


def test_skip_projection_only_when_shapes_differ():
    same = build_model(MACRO, arch([{"op": "conv_3x3", "channels": 16, "stride": 1,
                                     "connection": "skip"}]), SHAPES["2d"], 10)
    wider = build_model(MACRO, arch([{"op": "conv_3x3", "channels": 32, "stride": 1,
                                      "connection": "skip"}]), SHAPES["2d"], 10)
    assert isinstance(same.layers[0].side, torch.nn.Identity)
    assert not isinstance(wider.layers[0].side, torch.nn.Identity)
