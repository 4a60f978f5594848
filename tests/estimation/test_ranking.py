"""The rank-agreement code of the ranking study, on orders whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raynas.estimation.ranking import agreement, top_overlap

TRUTH = [0.31, 0.42, 0.55, 0.61, 0.68, 0.74, 0.80, 0.86, 0.91, 0.94]


def test_the_same_order_agrees_fully_and_the_reverse_disagrees_fully():
    same = agreement([10 * t for t in TRUTH], TRUTH)  # a monotone transform: same ranking
    assert (same.kendall, same.spearman, same.top_overlap) == pytest.approx((1, 1, 1))
    assert (same.kendall_low, same.kendall_high) == pytest.approx((1, 1))
    reverse = agreement([-t for t in TRUTH], TRUTH)
    assert (reverse.kendall, reverse.spearman, reverse.top_overlap) == pytest.approx((-1, -1, 0))
    assert reverse.spearman_high == pytest.approx(-1)


def test_one_swapped_pair_is_one_discordance_of_45():
    estimate = list(TRUTH)
    estimate[0], estimate[1] = estimate[1], estimate[0]
    result = agreement(estimate, TRUTH, k=3)
    assert result.kendall == pytest.approx((44 - 1) / 45)  # 44 concordant pairs, 1 discordant
    assert result.spearman == pytest.approx(1 - 6 * 2 / (10 * 99))
    assert result.top_overlap == 1.0  # the swap is at the bottom
    assert result.kendall_low < result.kendall <= result.kendall_high


def test_an_unrelated_estimate_has_an_interval_around_zero():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=200)
    result = agreement(rng.normal(size=200), truth)
    assert result.kendall_low < 0 < result.kendall_high
    assert result.spearman_low < 0 < result.spearman_high


def test_a_constant_estimate_ranks_nothing():
    result = agreement([1.0] * len(TRUTH), TRUTH)
    assert math.isnan(result.kendall) and math.isnan(result.spearman_low)


def test_top_overlap_counts_the_shared_members():
    assert top_overlap([5, 4, 3, 2, 1], [1, 2, 3, 5, 4], k=2) == 0.0
    assert top_overlap([5, 4, 3, 2, 1], [5, 4, 1, 2, 3], k=2) == 1.0
    assert top_overlap([5, 4, 3, 2, 1], [5, 1, 2, 4, 3], k=2) == 0.5


def test_mismatched_series_are_refused():
    with pytest.raises(ValueError, match="equally long"):
        agreement([1, 2, 3], [1, 2])
