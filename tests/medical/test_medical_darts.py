"""DARTS over the 3-D U-Net's mixed medical ops: the supernet runs the softmax(alpha) mixture
of every candidate op per level, a bilevel epoch with the Dice + cross-entropy loss moves alpha,
and the derived genotype is an architecture of the space that builds and segments."""

from __future__ import annotations

import pytest
import torch

from raynas.errors import ConfigError
from raynas.estimation import load_space
from raynas.estimation.darts import DartsSearch, alpha_metrics
from raynas.models import build_model
from raynas.models.supernet import Supernet, check_supernet_space


def test_darts_over_mixed_3d_ops_learns_alpha_and_derives_a_unet():
    space = load_space("unet3d_darts")
    check_supernet_space(space)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 8, 8, 8, generator=generator)
    y = (x[:, 0] > 0.5).long()  # a learnable mask: the bright voxels
    config = {"arch_lr": 3e-2, "weight_lr": 0.05, "order": 1, "seed": 0, "max_skip": 2}
    run = DartsSearch(space, (1, 8, 8, 8), 2, config, 1, torch.device("cpu"))
    ops = run.supernet.ops["levels"]
    assert len(ops) == 8 and len(run.supernet.mixed) == 5  # 3 encoder + 2 decoder mixed ops
    before = run.supernet.alpha["levels"].detach().clone()
    loss = run.train_epoch(x[:6], y[:6], x[6:], y[6:])
    assert torch.isfinite(torch.tensor(loss))
    assert not torch.equal(before, run.supernet.alpha["levels"].detach())
    weights = alpha_metrics(run.supernet)
    assert len(weights) == 3 * 8 and "alpha/levels/0/3d_conv_3x3x3" in weights
    derived = run.supernet.derive()
    assert [level["op"] for level in derived["levels"]] == [
        ops[int(row.argmax())] for row in run.supernet.alpha["levels"]]
    assert run.supernet.path_of(derived) == {"levels": [
        int(row.argmax()) for row in run.supernet.alpha["levels"]]}
    model = build_model(space, derived, (1, 8, 8, 8), 2)
    assert model(x[:2]).shape == (2, 2, 8, 8, 8)
    scores = run.problem.evaluate(run.supernet, x[6:], y[6:], 2, run.criterion)
    assert 0 <= scores["dice"] <= 1 and scores["dice"] == scores["accuracy"]


def test_a_searched_depth_is_refused_for_weight_sharing():
    with pytest.raises(ConfigError, match=r"levels\.count is searched, but a supernet shares"):
        Supernet(load_space("unet3d_seg"), (1, 8, 8, 8), 2)
