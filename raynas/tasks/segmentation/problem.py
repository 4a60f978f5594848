"""Segmentation losses and scores: a class per voxel, MONAI's ``DiceCELoss`` and ``DiceMetric``."""

from __future__ import annotations

from typing import Any

import torch

from raynas.errors import ConfigError
from raynas.estimation.problem import Loss, Problem, check_inputs


def _dice_ce() -> Loss:
    from monai.losses import DiceCELoss

    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    return lambda logits, masks: loss(logits, masks[:, None])


def _dice(predicted: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Dice per foreground class (mean over volumes; a class absent from both a volume's mask
    and its prediction scores 1 there), and their mean."""
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    metric = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=False)
    metric(one_hot(predicted[:, None], num_classes), one_hot(target[:, None], num_classes))
    per_class = metric.aggregate().tolist()
    mean = sum(per_class) / len(per_class)
    return {"accuracy": mean, "dice": mean,
            **{f"dice_class_{k}": d for k, d in enumerate(per_class, start=1)}}


SEGMENTATION = Problem("segmentation", _dice_ce, _dice, 4, max_batch=4)


def check_volumes(resolved: Any) -> None:
    """A segmentation search needs volumes (C, D, H, W), whose ops must fit them."""
    space, shape = resolved.space, resolved.data.input_shape
    if len(shape) != 4:
        raise ConfigError(f"--space {space.name}: model {space.model!r} needs volumes "
                          f"(C, D, H, W), the dataset's inputs are {shape}")
    check_inputs(resolved)
