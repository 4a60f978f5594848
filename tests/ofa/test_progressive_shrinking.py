"""Progressive shrinking (``raynas.ofa.shrinking``): which dimensions each phase samples, in-place
distillation outside the first phase, channel sorting before the width phase, and a resumed
training that goes on exactly as the uninterrupted one."""

from __future__ import annotations

import io
import random

import pytest
import torch

from raynas.data import load_dataset
from raynas.errors import ConfigError
from raynas.estimation.train import tensors
from raynas.ofa.elastic import ElasticSupernet
from raynas.ofa.shrinking import ProgressiveShrinking, sample_arch

PHASES = list(ElasticSupernet.PHASES)


def values(arch) -> dict[str, set]:
    """Every elastic value an architecture uses, by dimension."""
    stages = arch["stages"].values()
    return {"resolution": {arch["resolution"]},
            "depth": {len(s["blocks"]) for s in stages},
            "kernel": {b["kernel"] for s in stages for b in s["blocks"]},
            "expand": {b["expand"] for s in stages for b in s["blocks"]}}


@pytest.mark.parametrize(("phase", "sampled"), [
    ("full", {"resolution"}), ("kernel", {"resolution", "kernel"}),
    ("depth", {"resolution", "kernel", "depth"}),
    ("width", {"resolution", "kernel", "depth", "expand"})])
def test_each_phase_samples_its_dimensions_and_keeps_the_rest_largest(tiny_space, phase,
                                                                       sampled):
    training = ProgressiveShrinking(tiny_space, (1, 8, 8), 10, 1, torch.device("cpu"), 0)
    net, rng = training.supernet, random.Random(0)
    seen: dict[str, set] = {k: set() for k in ("resolution", "depth", "kernel", "expand")}
    for _ in range(200):
        for key, found in values(sample_arch(net, phase, rng)).items():
            seen[key] |= found
    largest = values(net.choices.largest())
    for key, found in seen.items():
        assert (found == largest[key]) == (key not in sampled), (phase, key, found)


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    return tensors(torch.device("cpu"), data.x_train[:256], data.y_train[:256])


def test_phases_run_in_order_with_distillation_after_the_first(tiny_space, digits):
    training = ProgressiveShrinking(tiny_space, (1, 8, 8), 10, 1, torch.device("cpu"), 0)
    x, y = digits
    phases = []
    for _ in PHASES:
        phases.append(training.phase)
        losses = training.train_epoch(x, y)
        assert ("kd_loss" in losses) == (phases[-1] != "full")
        assert all(v >= 0 and v == v for v in losses.values())
    assert phases == list(PHASES)
    assert training.epoch == training.epochs == len(PHASES)


def test_the_width_phase_starts_with_sorted_channels(tiny_space, digits):
    training = ProgressiveShrinking(tiny_space, (1, 8, 8), 10, 1, torch.device("cpu"), 0)
    training.epoch = PHASES.index("width")  # as if the earlier phases had run
    training.start_phase()
    for blocks in training.supernet.stages:
        for block in blocks:
            importance = block.project.weight.abs().sum(dim=(0, 2, 3))
            assert torch.all(importance[:-1] >= importance[1:])


def test_a_resumed_training_goes_on_as_the_uninterrupted_one(tiny_space, digits):
    x, y = digits

    def fresh() -> ProgressiveShrinking:
        return ProgressiveShrinking(tiny_space, (1, 8, 8), 10, 2, torch.device("cpu"), 0)

    straight, resumed = fresh(), fresh()
    for _ in range(3):  # into the kernel phase (2 epochs a phase): mid-phase at epoch 3
        straight.train_epoch(x, y)
    saved = io.BytesIO()  # through torch.save/load, as the Tune checkpoint goes
    torch.save(straight.state(), saved)
    saved.seek(0)
    resumed.load(torch.load(saved, weights_only=False))
    assert resumed.phase == straight.phase == "kernel"
    assert straight.train_epoch(x, y) == resumed.train_epoch(x, y)
    for a, b in zip(straight.supernet.parameters(), resumed.supernet.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_phase_needs_an_epoch(tiny_space):
    with pytest.raises(ConfigError, match="--epochs-per-phase"):
        ProgressiveShrinking(tiny_space, (1, 8, 8), 10, 0, torch.device("cpu"), 0)
