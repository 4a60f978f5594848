"""The fidelity knob: what the schedulers' budget counts, and the data rungs' subsets."""

from __future__ import annotations

import numpy as np
import pytest

from raynas.config import SearchConfig
from raynas.errors import ConfigError
from raynas.estimation.fidelity import Fidelity, nested_order, parse_fidelity
from raynas.experiment.resolve import resolve


@pytest.mark.parametrize(("text", "rungs", "fractions", "max_budget"), [
    ("epochs", 0, [], 5),
    ("data", 3, [1 / 9, 1 / 3, 1], 9),
    ("data:0.3", 2, [1 / 3, 1], 3),
    ("data:0.01", 5, [1 / 81, 1 / 27, 1 / 9, 1 / 3, 1], 81),
    ("data:1", 1, [1], 1),
])
def test_parse_fidelity(text, rungs, fractions, max_budget):
    fidelity = parse_fidelity(text, max_epochs=5)
    assert fidelity.rungs == rungs and fidelity.max_budget == max_budget
    assert [fidelity.fraction(k) for k in range(rungs)] == pytest.approx(fractions)
    assert [fidelity.budget(k) for k in range(rungs)] == [3**k for k in range(rungs)]


@pytest.mark.parametrize("text", ["data:0", "data:1.5", "data:x", "samples", "epochs:2", ""])
def test_bad_fidelity_is_a_one_line_error(text):
    with pytest.raises(ConfigError, match="--fidelity: expected epochs, data") as info:
        parse_fidelity(text, 3)
    assert "\n" not in str(info.value)


def test_nested_subsets_are_class_balanced_at_every_size():
    labels = np.repeat(np.arange(10), [50, 60, 70, 80, 90, 100, 110, 120, 130, 140])
    order = nested_order(labels, seed=0)
    assert sorted(order) == list(range(len(labels)))
    for size in (20, 105, 350, len(labels)):
        counts = np.bincount(labels[order[:size]], minlength=10)
        expected = size * np.bincount(labels) / len(labels)
        assert np.all(np.abs(counts - expected) <= 1.5)
    assert not np.array_equal(order, nested_order(labels, seed=1))
    assert np.array_equal(order, nested_order(labels, seed=0))


def test_pbt_needs_the_epoch_fidelity():
    with pytest.raises(ConfigError, match="--scheduler pbt: needs --fidelity epochs"):
        resolve(SearchConfig(space="fixed_cnn", strategy="random", scheduler="pbt",
                              fidelity="data"))


def test_fidelity_describes_itself():
    assert Fidelity(4).describe() == "<= 4 epochs each"
    assert Fidelity(2, 3).describe() == "2 epochs on data fractions 1/9, 1/3, 1"
