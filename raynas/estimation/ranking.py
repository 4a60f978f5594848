"""How well a cheap estimate ranks architectures against their trained accuracy: Kendall tau
and Spearman rho (scipy) with bootstrap 95 % intervals (``scipy.stats.bootstrap``, the pairs
resampled together) and the overlap of the top k.

An interval, not a p-value alone, because the studies are small (tens of architectures): two
estimators whose intervals overlap are not shown to differ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import bootstrap, kendalltau, spearmanr

RESAMPLES = 1000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Agreement:
    """The rank agreement of an estimate with the truth; NaN where the estimate is constant
    (it ranks nothing)."""

    kendall: float
    kendall_low: float
    kendall_high: float
    spearman: float
    spearman_low: float
    spearman_high: float
    top_k: int
    top_overlap: float  # share of the truth's top k that the estimate's top k holds

    def row(self) -> dict[str, float]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}

    def line(self) -> str:
        return (f"Kendall {self.kendall:+.3f} [{self.kendall_low:+.3f}, {self.kendall_high:+.3f}]"
                f", Spearman {self.spearman:+.3f} [{self.spearman_low:+.3f}, "
                f"{self.spearman_high:+.3f}], top-{self.top_k} overlap {self.top_overlap:.0%}")


def _kendall(a: np.ndarray, b: np.ndarray) -> float:
    return float(kendalltau(a, b).statistic)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(spearmanr(a, b).statistic)


def top_overlap(estimates: Sequence[float], truth: Sequence[float], k: int) -> float:
    """|top k by the estimate ∩ top k by the truth| / k (ties broken by position)."""
    def top(values: Sequence[float]) -> set[int]:
        return set(np.argsort(-np.asarray(values, dtype=float), kind="stable")[:k].tolist())

    return len(top(estimates) & top(truth)) / k


def interval(statistic: object, a: np.ndarray, b: np.ndarray, seed: int) -> tuple[float, float]:
    """The percentile bootstrap interval of ``statistic(a, b)`` over resampled pairs (BCa's
    jackknife fails on the ties a small sample of accuracies has)."""
    result = bootstrap((a, b), statistic, paired=True, vectorized=False, n_resamples=RESAMPLES,
                       confidence_level=CONFIDENCE, method="percentile",
                       rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return float(low), float(high)


def agreement(estimates: Sequence[float], truth: Sequence[float], k: int = 5,
              seed: int = 0) -> Agreement:
    """Kendall tau and Spearman rho of ``estimates`` against ``truth`` (higher estimates should
    mean higher truth), each with its bootstrap interval, and the top-``k`` overlap."""
    a, b = np.asarray(estimates, dtype=float), np.asarray(truth, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 3:
        raise ValueError(f"agreement: need two equally long series of >= 3 values, got "
                         f"{a.shape} and {b.shape}")
    k = min(k, len(a))
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        nan = math.nan
        return Agreement(nan, nan, nan, nan, nan, nan, k, top_overlap(a, b, k))
    return Agreement(_kendall(a, b), *interval(_kendall, a, b, seed), _spearman(a, b),
                     *interval(_spearman, a, b, seed), k, top_overlap(a, b, k))
