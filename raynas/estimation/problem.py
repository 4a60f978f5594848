"""What a network learns: classification (a class per input) or segmentation (a class per
voxel). The one seam in the training loop: the loss, how a split is scored, and how many inputs
an evaluation batch holds.

The problem follows from the space's model builder (``SEGMENTATION`` in its module, e.g.
``raynas.models.unet``), so every trainer of that space - a trial, the final retraining, the
benchmarks - trains it the same way. Each problem's scores hold ``accuracy``, the value the
search ranks by (``val_accuracy``): the fraction of correct labels for classification, the mean
foreground Dice for segmentation, which also reports it as ``dice`` and per class as
``dice_class_K``. Segmentation uses MONAI's ``DiceCELoss`` and ``DiceMetric``; classification
also reports its ROC AUC (``auc``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from raynas.errors import ConfigError
from raynas.models import BUILDERS
from raynas.ops import VOLUMETRIC
from raynas.space import Space

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Problem:
    name: str
    loss: Callable[[], Loss]  # a fresh loss function: logits, targets -> mean loss
    # what ``keep`` kept of the logits, targets, number of classes -> scores
    score: Callable[[torch.Tensor, torch.Tensor, int], dict[str, float]]
    eval_batch: int  # inputs per forward pass when evaluating
    max_batch: int | None = None  # a cap on a weight-sharing supernet's batches (memory)
    # What of a batch's logits the scores need: the predicted labels (segmentation: a class per
    # voxel), or the class probabilities (classification: accuracy and ROC AUC).
    keep: Callable[[torch.Tensor], torch.Tensor] = lambda logits: logits.argmax(1)

    @torch.no_grad()
    def evaluate(self, model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                 y: torch.Tensor, num_classes: int, loss: Loss | None = None
                 ) -> dict[str, float]:
        """The mean loss and the scores (``score``) of ``model`` (a module, put in eval mode,
        or a function of one in eval mode already) on a split."""
        loss = loss or self.loss()
        if isinstance(model, nn.Module):
            model.eval()
        total, kept = 0.0, []
        for start in range(0, len(x), self.eval_batch):
            out = model(x[start : start + self.eval_batch])
            target = y[start : start + self.eval_batch]
            total += loss(out, target).item() * len(target)
            kept.append(self.keep(out))
        return {"loss": total / len(x), **self.score(torch.cat(kept), y, num_classes)}


def _accuracy(probabilities: torch.Tensor, target: torch.Tensor, num_classes: int
              ) -> dict[str, float]:
    """Accuracy, and the ROC AUC averaged one-vs-rest over the classes the split holds
    (scikit-learn's ``roc_auc_score`` per class); no AUC for a split of one class."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    scores = {"accuracy": (probabilities.argmax(1) == target).sum().item() / len(target)}
    y, p = target.cpu().numpy(), probabilities.float().cpu().numpy()
    present = np.unique(y)
    if len(present) > 1:
        scores["auc"] = float(np.mean([roc_auc_score(y == c, p[:, c]) for c in present]))
    return scores


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


CLASSIFICATION = Problem("classification", nn.CrossEntropyLoss, _accuracy, 1024,
                         keep=lambda logits: logits.softmax(1))
SEGMENTATION = Problem("segmentation", _dice_ce, _dice, 4, max_batch=4)


def problem_of(space: Space) -> Problem:
    builder = BUILDERS.get(space.model)
    return SEGMENTATION if getattr(builder, "SEGMENTATION", False) else CLASSIFICATION


def is_detection(space: Space) -> bool:
    """A detection space's model is a torchvision detector (boxes, not logits), which trains in
    its own loop (``raynas.estimation.detection``), not through a ``Problem``."""
    return getattr(BUILDERS.get(space.model), "DETECTION", False)


def check_detection_space(space: Space) -> None:
    if not is_detection(space):
        raise ConfigError(f"--space {space.name}: model {space.model!r} does not detect "
                          "objects; use a detection space (detection)")


def check_data(space: Space, masks: bool, input_shape: tuple[int, ...]) -> None:
    """ConfigError unless the space's model fits the data: a segmentation model for masks, a
    classifier for labels, volumes for a volumetric model."""
    if is_detection(space):
        raise ConfigError(f"--space {space.name}: model {space.model!r} detects objects, and the "
                          "dataset has one label per input; give coco:DIR (docs/detection.md)")
    segmenting = problem_of(space) is SEGMENTATION
    if masks and not segmenting:
        raise ConfigError(f"--space {space.name}: the dataset has segmentation masks, and model "
                          f"{space.model!r} classifies; use a segmentation space (unet3d_seg)")
    if segmenting and not masks:
        raise ConfigError(f"--space {space.name}: model {space.model!r} segments, and the "
                          "dataset has one label per input; give masks (docs/medical.md)")
    volumetric = sorted({op for field in ("layers.op", "levels.op")
                         for op in space.values(field) or () if op in VOLUMETRIC})
    if (segmenting or volumetric) and len(input_shape) != 4:
        what = f"op {volumetric[0]!r}" if volumetric else f"model {space.model!r}"
        raise ConfigError(f"--space {space.name}: {what} needs volumes (C, D, H, W), the "
                          f"dataset's inputs are {input_shape}")
