"""The elastic supernet of Once-for-All (``raynas.ofa.elastic``): a sub-network extracted
stand-alone computes exactly what the supernet computes with that setting, for each elastic
dimension; kernel transforms, channel sorting, and the ``ofa`` builder's checks."""

from __future__ import annotations

import random
import re

import pytest
import torch

from raynas.errors import ConfigError, SpaceError
from raynas.estimation import load_space
from raynas.models import build_model, latency_units
from raynas.objectives.measure import count_params
from raynas.ofa.elastic import ElasticSupernet

SHAPE = (1, 12, 12)


def trained_like(space) -> ElasticSupernet:
    """A supernet whose BatchNorm statistics, affine parameters and kernel transforms are not
    at their initial values (identity transforms and unit statistics would hide mistakes)."""
    torch.manual_seed(0)
    net = ElasticSupernet(space, SHAPE, 10)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
        for name, param in net.named_parameters():
            if "transforms" in name:
                param.add_(0.1 * torch.randn_like(param))
    return net.eval()


def shrink(net: ElasticSupernet, dimension: str):
    """The largest architecture with one dimension at its smallest."""
    return net.choices.arch(lambda options, what: min(options) if what == dimension
                            else max(options))


@pytest.mark.parametrize("dimension", ["kernel", "depth", "expand", "resolution"])
def test_an_extracted_subnetwork_computes_what_the_supernet_computes(tiny_space, dimension):
    net = trained_like(tiny_space)
    x = torch.randn(4, *SHAPE)
    full = net.use(net.choices.largest())(x)
    arch = shrink(net, dimension)
    inside = net.use(arch)(x)
    alone = net.extract(arch).eval()(x)
    assert torch.allclose(inside, alone, atol=1e-6)
    assert not torch.allclose(inside, full, atol=1e-3)  # the dimension did change the network


def test_random_subnetworks_extract_exactly(tiny_space):
    net = trained_like(tiny_space)
    x = torch.randn(3, *SHAPE)
    rng = random.Random(1)
    for _ in range(5):
        arch = tiny_space.sample(rng)
        alone = net.extract(arch)
        assert count_params(alone) == count_params(build_model(tiny_space, arch, SHAPE, 10))
        assert torch.allclose(net.use(arch)(x), alone.eval()(x), atol=1e-6)


def test_a_smaller_kernel_is_the_transformed_centre_of_the_largest(tiny_space):
    net = ElasticSupernet(tiny_space, SHAPE, 10)
    block = net.stages[0][0]
    block.expand_ratio = 3
    block.kernel = 3
    centre = block.depthwise.weight[:, :, 2:5, 2:5]
    assert torch.equal(block.kernel_weight(), centre)  # identity transforms: the centre as is
    with torch.no_grad():
        block.transforms["5to3"].mul_(2.0)
    assert torch.allclose(block.kernel_weight(), 2 * centre)
    block.kernel = 5  # 7 -> 5 only: the 5to3 matrix is not used
    assert torch.equal(block.kernel_weight(), block.depthwise.weight[:, :, 1:6, 1:6])


def test_sorting_channels_keeps_the_full_network_and_orders_by_importance(tiny_space):
    net = trained_like(tiny_space)
    x = torch.randn(4, *SHAPE)
    largest = net.choices.largest()
    before = net.use(largest)(x)
    net.sort_channels()
    assert torch.allclose(net.use(largest)(x), before, atol=1e-5)
    for blocks in net.stages:
        for block in blocks:
            importance = block.project.weight.abs().sum(dim=(0, 2, 3))
            assert torch.all(importance[:-1] >= importance[1:])


def test_the_builtin_space_builds_and_lists_its_latency_units():
    space = load_space("ofa_mbv3")
    arch = space.sample(random.Random(0))
    model = build_model(space, arch, (1, 28, 28), 10)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    units = latency_units(space, arch, (1, 28, 28), 10)
    blocks = sum(len(s["blocks"]) for s in arch["stages"].values())
    assert len(units) == blocks + 2 + (arch["resolution"] != 1)  # + stem, head (+ resize)
    assert all(u.make()(torch.zeros(1, *u.input_shape)) is not None for u in units)


@pytest.mark.parametrize(("path", "value", "field", "message"), [
    ("stages.s1.blocks.block.kernel", {"choice": [3, 4]}, "stages.s1.blocks.kernel", "odd"),
    ("stages.s2.channels", 12, "stages.s2.channels", "multiple of 8"),
    ("resolution", {"choice": [0.5, 1.5]}, "resolution", "(0, 1]"),
    ("stages.s1.stride", {"choice": [1, 2]}, "stages.s1.stride", "a constant"),
])
def test_the_builder_rejects_what_it_cannot_build(tiny_doc, path, value, field, message):
    *parents, last = path.split(".")
    node = tiny_doc["space"]
    for key in parents:
        node = node[key]
    node[last] = value
    with pytest.raises(SpaceError, match=rf"space\.{re.escape(field)}: .*{re.escape(message)}"):
        load_space(tiny_doc)


def test_a_supernet_needs_an_ofa_space():
    with pytest.raises(ConfigError, match="needs an ofa space"):
        ElasticSupernet(load_space("small_cnn"), SHAPE, 10)
