"""Cell spaces (NAS-Bench-201, DARTS) and their genotype notations (the tabular benchmarks,
which are keyed by them, are tested in tests/tabular)."""

from __future__ import annotations

import random

import pytest
import torch
import yaml
from torch import nn

from raynas.errors import SpaceError
from raynas.estimation import load_space
from raynas.models import build_model, describe, from_genotype
from raynas.models.cell import (
    DARTS_OPS,
    NB201_EDGES,
    NB201_OPS,
    NB201Net,
    nb201_field,
    parse_genotype,
)

DARTS_V2 = (  # the cell DARTS found on CIFAR-10, as its genotypes.py prints it
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
    "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
    "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
    "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
    "reduce_concat=range(2, 6))")


def test_nb201_strings_round_trip_for_all_15625_cells():
    space = load_space("nb201_cell")
    archs = space.grid()
    strings = [describe(space, a) for a in archs]
    assert len(archs) == len(set(strings)) == 15_625
    assert all(from_genotype(space, s) == a for s, a in zip(strings, archs, strict=True))
    # the benchmark's own notation: the best CIFAR-10 cell of the NAS-Bench-201 paper
    best = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
            "nor_conv_3x3~2|")
    cell = from_genotype(space, best)["cell"]
    assert cell["edge_3_0"] == "skip_connect" and cell["edge_2_1"] == "nor_conv_3x3"
    for bad in ("|nor_conv_3x3~0|+|none~1|none~0|+|none~0|none~1|none~2|",
                "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "|none~0|"):
        with pytest.raises(SpaceError, match="NAS-Bench-201 string"):
            from_genotype(space, bad)


def test_darts_genotypes_round_trip():
    space = load_space("darts_cell")
    rng = random.Random(0)
    for _ in range(300):
        arch = space.sample(rng)
        assert from_genotype(space, describe(space, arch)) == arch
    arch = from_genotype(space, DARTS_V2)
    again, original = parse_genotype(describe(space, arch)), parse_genotype(DARTS_V2)
    assert again.normal_concat == original.reduce_concat == [2, 3, 4, 5]
    for kind in ("normal", "reduce"):  # the same edges; each node's pair in input order
        for k in range(4):
            assert sorted(getattr(again, kind)[2 * k:2 * k + 2], key=lambda e: e[1]) == sorted(
                getattr(original, kind)[2 * k:2 * k + 2], key=lambda e: e[1])
    assert arch["normal"]["node4"] == {"inputs": "0,1", "op_a": "skip_connect",
                                       "op_b": "sep_conv_3x3"}
    twice = DARTS_V2.replace("('skip_connect', 0), ('dil_conv_3x3', 2)",
                             "('dil_conv_3x3', 2), ('skip_connect', 2)")
    with pytest.raises(SpaceError, match="node 5 must read two distinct earlier states"):
        from_genotype(space, twice)
    with pytest.raises(SpaceError, match="not a DARTS genotype"):
        from_genotype(space, "Genotype(normal=__import__('os'))")


@pytest.fixture
def one_thread():
    """Tiny convolutions run fastest on one thread (as trials do; more threads only spin)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _trains(model: nn.Module, shape: tuple[int, ...], through_cells: bool = True) -> None:
    """Forward and backward; gradients reach the stem unless every edge is ``none``."""
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    stem = model.stem[0].weight.grad
    assert (stem is not None and stem.abs().sum() > 0) == through_cells


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28)])
def test_every_op_and_both_cell_types_build_and_train(shape, one_thread):
    nb201, darts = load_space("nb201_cell"), load_space("darts_cell")
    for op in NB201_OPS:
        arch = {**nb201.sample(random.Random(0)),
                "cell": {nb201_field(j, i): op for j, i in NB201_EDGES}}
        nb201.validate(arch)
        _trains(build_model(nb201, arch, shape, 10), shape, op != "none")
    for op in DARTS_OPS:
        cell = {f"node{n}": {"inputs": f"{n - 2},{n - 1}" if n > 2 else "0,1", "op_a": op,
                             "op_b": op} for n in range(2, 6)}
        arch = {**darts.sample(random.Random(0)), "channels": 4, "layers": 3,
                "normal": cell, "reduce": cell}
        model = build_model(darts, arch, shape, 10)  # layers 3: normal, reduce, reduce
        assert [c.preprocess0.__class__.__name__ for c in model.cells] == [
            "Sequential", "Sequential", "FactorizedReduce"]
        _trains(model, shape, op != "none")


def test_nb201_runs_on_sequences_with_1d_layers(one_thread):
    """MNIST-1D's (1, 40): every op 1-D (no 2-D layer anywhere), a 3x3 conv a length-3 one."""
    space, shape = load_space("nb201_cell"), (1, 40)
    for op in NB201_OPS:
        arch = {**space.sample(random.Random(0)),
                "cell": {nb201_field(j, i): op for j, i in NB201_EDGES}}
        model = build_model(space, arch, shape, 10)
        assert not [m for m in model.modules()
                    if isinstance(m, nn.Conv2d | nn.BatchNorm2d | nn.AvgPool2d | nn.MaxPool2d)]
        _trains(model, shape, op != "none")
    edge = NB201_OPS["nor_conv_3x3"](8, 8, 1, 1)
    assert edge[1].weight.shape == (8, 8, 3)
    with pytest.raises(SpaceError, match=r"images \(C, H, W\) or sequences \(C, L\)"):
        build_model(space, space.sample(random.Random(0)), (40,), 10)


def test_cells_take_any_module_per_edge(one_thread):
    """What one-shot supernets build on: every edge from a factory (here, the sum of all
    ops, a mixed op with equal weights)."""

    class Sum(nn.Module):
        def __init__(self, c: int, stride: int) -> None:
            super().__init__()
            self.ops = nn.ModuleList(f(c, c, stride) for f in NB201_OPS.values())

        def forward(self, x):
            return sum(op(x) for op in self.ops)

    edges = []

    def edge(node: int, source: int, c: int, stride: int) -> nn.Module:
        edges.append((node, source))
        return Sum(c, stride)

    _trains(NB201Net(edge, (1, 8, 8), 10, channels=4, cells_per_stage=1), (1, 8, 8))
    assert edges == list(NB201_EDGES) * 3  # one cell per stage


@pytest.mark.parametrize("model, edit, message", [
    ("nb201_cell", lambda s: s["cell"].update(edge_1_0={"choice": ["none", "conv_9x9"]}),
     "space.cell.edge_1_0: unknown op 'conv_9x9'"),
    ("nb201_cell", lambda s: s["cell"].update(edge_2_1={"choice": ["none", "3d_conv_3x3x3"]}),
     "space.cell.edge_2_1: op '3d_conv_3x3x3' takes no sequences or images, the inputs of a "
     "NAS-Bench-201 cell"),
    ("nb201_cell", lambda s: s["cell"].pop("edge_3_2"), "space.cell.edge_3_2: missing"),
    ("nb201_cell", lambda s: s.update(channels={"float": [1.0, 2.0]}),
     "space.channels: must be a constant or a choice"),
    ("darts_cell", lambda s: s["normal"]["node3"].update(inputs={"choice": ["0,1", "2,2"]}),
     "space.normal.node3.inputs: '2,2' is not a pair"),
    ("darts_cell", lambda s: s.update(layer=3), "space.layer: unknown field"),
])
def test_cell_spaces_are_checked_at_load(model, edit, message):
    path = load_space(model).document
    doc = yaml.safe_load(yaml.safe_dump(path))  # a deep copy without YAML aliases
    edit(doc["space"])
    with pytest.raises(SpaceError, match=message) as error:
        load_space(doc)
    assert "\n" not in str(error.value)
