"""How a classification split is scored (raynas.estimation.problem): accuracy and ROC AUC, the
AUC one-vs-rest over the classes the split holds, as scikit-learn computes it."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import roc_auc_score

from raynas.estimation.problem import CLASSIFICATION


def scores(logits: torch.Tensor, y: torch.Tensor, classes: int) -> dict[str, float]:
    return CLASSIFICATION.evaluate(lambda x: x, logits, y, classes)


def test_a_perfect_ranking_scores_auc_1_and_a_reversed_one_0():
    y = torch.tensor([0, 0, 1, 1])
    right = torch.tensor([[2.0, 0], [1, 0], [0, 1], [0, 2]])
    assert scores(right, y, 2) | {"loss": 0} == {"loss": 0, "accuracy": 1.0, "auc": 1.0}
    assert scores(-right, y, 2)["auc"] == 0.0


def test_multiclass_auc_is_the_mean_of_one_vs_rest_over_the_classes_present():
    generator = torch.Generator().manual_seed(0)
    logits, y = torch.randn(60, 4, generator=generator), torch.randint(0, 3, (60,),
                                                                      generator=generator)
    probabilities = logits.softmax(1).numpy()
    expected = sum(roc_auc_score(y.numpy() == c, probabilities[:, c]) for c in range(3)) / 3
    assert scores(logits, y, 4)["auc"] == pytest.approx(expected)  # class 3 absent: left out


def test_a_split_of_one_class_has_no_auc():
    assert "auc" not in scores(torch.randn(5, 3), torch.zeros(5, dtype=torch.long), 3)
