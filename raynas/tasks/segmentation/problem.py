"""Segmentation losses and scores: a class per voxel, MONAI's ``DiceCELoss`` and ``DiceMetric``;
and training on patches (``train.patch_size: N``): every training volume is cropped to a random
N³ patch and whole volumes are segmented by sliding an N³ window over them, so a network trains
on volumes too large for a batch of them (MONAI's ``RandSpatialCropd`` and
``sliding_window_inference``). Without ``patch_size``, or on volumes no larger than a patch,
whole volumes are used. These hooks serve whoever trains a segmentation space on arrays with
the shared loop (``train.Run``: DARTS' scores, ``raynas tabulate``); the segmentation task's own
trials stream volumes from disk and sample foreground/background-balanced patches
(``raynas.tasks.segmentation.train``)."""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot
from monai.transforms import RandSpatialCropd

from raynas.errors import ConfigError, SpaceError
from raynas.estimation.problem import Loss, Model, Problem, check_inputs
from raynas.space import Space
from raynas.tasks.segmentation.picture import slices_of_first

#: The training hyperparameter segmentation adds (``Problem.train_options``): a patch's edge.
PATCH_SIZE = "patch_size"


def _dice_ce() -> Loss:
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    return lambda logits, masks: loss(logits, masks[:, None])


def _dice(predicted: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Dice per foreground class (mean over volumes; a class absent from both a volume's mask
    and its prediction scores 1 there), and their mean."""
    metric = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=False)
    metric(one_hot(predicted[:, None], num_classes), one_hot(target[:, None], num_classes))
    per_class = metric.aggregate().tolist()
    mean = sum(per_class) / len(per_class)
    return {"accuracy": mean, "dice": mean,
            **{f"dice_class_{k}": d for k, d in enumerate(per_class, start=1)}}


def check_patch_size(space: Space, origin: str) -> None:
    """``train.patch_size``, if set, must be integers >= 4 (a constant or a choice)."""
    if space.domain(f"train.{PATCH_SIZE}") is None:
        return
    sizes = space.values(f"train.{PATCH_SIZE}")
    if sizes is None or any(not isinstance(v, int) or isinstance(v, bool) or v < 4
                            for v in sizes):
        raise SpaceError(f"{origin}: space.train.{PATCH_SIZE}: must be integers >= 4")


def _patch(x: torch.Tensor, hp: dict[str, Any]) -> int:
    """The patch edge, or 0 (whole volumes) without one or when the volumes fit in it."""
    patch = int(hp.get(PATCH_SIZE) or 0)
    return 0 if all(s <= patch for s in x.shape[2:]) else patch


def random_patches(x: torch.Tensor, y: torch.Tensor, hp: dict[str, Any],
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random patch of every volume and the same patch of its mask (``Problem.crop``),
    seeded from ``generator``."""
    patch = _patch(x, hp)
    if not patch:
        return x, y
    crop = RandSpatialCropd(("image", "mask"), patch)
    crop.set_random_state(int(torch.randint(2**31, (1,), generator=generator)))
    pairs = [crop({"image": image, "mask": mask[None]}) for image, mask in zip(x, y,
                                                                               strict=True)]
    return (torch.stack([p["image"].as_tensor() for p in pairs]),
            torch.stack([p["mask"].as_tensor()[0] for p in pairs]))


def sliding_window(model: Model, x: torch.Tensor, hp: dict[str, Any]) -> torch.Tensor:
    """The logits of whole volumes (``Problem.infer``): with a patch size, by sliding a window
    of that size (what the model trained on) over them, an evaluation batch of windows at a
    time."""
    patch = _patch(x, hp)
    if not patch:
        return model(x)
    return sliding_window_inference(x, patch, SEGMENTATION.eval_batch, model)


SEGMENTATION = Problem("segmentation", _dice_ce, _dice, 4, max_batch=4,
                       train_options=(PATCH_SIZE,), check_train=check_patch_size,
                       crop=random_patches, infer=sliding_window,
                       picture=slices_of_first)


def check_volumes(resolved: Any) -> None:
    """A segmentation search needs volumes (C, D, H, W), whose ops must fit them."""
    space, shape = resolved.space, resolved.data.input_shape
    if len(shape) != 4:
        raise ConfigError(f"--space {space.name}: model {space.model!r} needs volumes "
                          f"(C, D, H, W), the dataset's inputs are {shape}")
    check_inputs(resolved)
