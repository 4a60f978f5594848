"""DARTS over mixed {zero, identity, convolution, attention} edges on sequences: the
``cell_attention_1d`` space (a NAS-Bench-201 cell whose edges take ops of the registry) on
MNIST-1D. The cell builds with attention on its edges, the supernet mixes attention with the
convolutions, the second-order hypergradient flows through attention into its alpha, and the
derived cell is one of the space's."""

from __future__ import annotations

import math
import random

import pytest
import torch

from raynas.data import load_dataset
from raynas.errors import SpaceError
from raynas.estimation import load_space
from raynas.estimation.darts import DartsSearch
from raynas.models import build_model
from raynas.models.cell import NB201_EDGES, nb201_field, nb201_string, parse_nb201
from raynas.tasks.sequences.layers import TokenOp

SPACE = load_space("cell_attention_1d")


def test_a_cell_with_attention_on_its_edges_classifies_sequences():
    cell = {nb201_field(j, i): op for (j, i), op in zip(
        NB201_EDGES, ["attention_2h", "nor_conv_3x3", "skip_connect", "none", "attention_2h",
                      "nor_conv_3x3"], strict=True)}
    arch = SPACE.validate({**SPACE.sample(random.Random(0)), "cell": cell})
    net = build_model(SPACE, arch, (1, 40), 10)
    assert sum(isinstance(m, TokenOp) for m in net.modules()) == 2 * 3  # 2 edges x 3 stages
    assert net(torch.randn(5, 1, 40)).shape == (5, 10)
    assert parse_nb201(nb201_string(cell)) == cell  # the genotype names the attention edges


def test_channels_that_the_heads_do_not_divide_are_refused_at_load():
    document = {**SPACE.document, "space": {**SPACE.document["space"], "channels": 9}}
    with pytest.raises(SpaceError) as err:
        load_space(document)
    assert str(err.value) == ("cell_attention_1d: space.channels: 9 is not a multiple of 2, "
                              "which op 'attention_2h' (cell.edge_1_0) needs")


@pytest.mark.parametrize("order", [1, 2])
def test_darts_mixes_attention_with_convolutions_and_learns_its_alpha(order):
    data = load_dataset("mnist1d")
    search = DartsSearch(SPACE, data.input_shape, data.num_classes,
                         {"seed": 0, "order": order, "weight_lr": 0.025, "arch_lr": 3e-3},
                         epochs=1, device=torch.device("cpu"))
    supernet = search.supernet
    ops = supernet.ops["cell"]
    assert ops == ["none", "skip_connect", "nor_conv_3x3", "attention_2h"]
    before = supernet.alpha["cell"].detach().clone()
    n = 256
    x, y = torch.as_tensor(data.x_train[:n]), torch.as_tensor(data.y_train[:n])
    xv, yv = torch.as_tensor(data.x_val[:n]), torch.as_tensor(data.y_val[:n])
    loss = search.train_epoch(x, y, xv, yv)
    assert math.isfinite(loss) and loss > 0
    moved = (supernet.alpha["cell"] - before)[:, ops.index("attention_2h")]
    assert (moved != 0).all()  # every edge's attention alpha got a gradient
    attention = [p for name, p in supernet.named_parameters() if ".qkv." in name]
    assert attention and all(p.grad is not None and p.grad.abs().sum() > 0 for p in attention)
    derived = supernet.derive()  # the argmax op on every edge, a cell of the space
    assert [derived["cell"][nb201_field(j, i)] for j, i in NB201_EDGES] == [
        ops[k] for k in supernet.alpha["cell"].argmax(1).tolist()]
