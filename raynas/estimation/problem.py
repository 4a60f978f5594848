"""What a network learns: the one seam in the shared training loop (``train.Run``). A problem
says the loss, how a split is scored and how many inputs an evaluation batch holds, and, where
its loop does more than feed whole inputs, the hooks that say what: the training
hyperparameters it adds, the crop of a training batch, the inference over whole inputs, and a
picture of the final model's predictions.

The problem follows from the space's model builder (its task's ``Task.problem``), so every
trainer of that space - a trial, the final retraining, the benchmarks - trains it the same way.
Classification is the core's problem; applications register theirs with their task. Each
problem's scores hold ``accuracy``, the value the search ranks by (``val_accuracy``): for
classification the fraction of correct labels; it also reports its ROC AUC (``auc``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from raynas.errors import ConfigError
from raynas.estimation.task import TASKS
from raynas.models import builder_of
from raynas.ops import OPS, SHAPES
from raynas.space import Space

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Model = Callable[[torch.Tensor], torch.Tensor]


def whole(x: torch.Tensor, y: torch.Tensor, hp: dict[str, Any], generator: torch.Generator
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The default ``Problem.crop``: a training batch as it is."""
    return x, y


def at_once(model: Model, x: torch.Tensor, hp: dict[str, Any]) -> torch.Tensor:
    """The default ``Problem.infer``: one forward pass over the inputs."""
    return model(x)


@dataclass(frozen=True)
class Chance:
    """What a network that learned nothing scores: ``accuracy`` (the majority class's share of
    the validation split) with ``margin`` (two standard errors of it on that split), and
    ``loss``, the training loss of predicting the label frequencies (their entropy)."""

    accuracy: float
    margin: float
    loss: float


def label_chance(data: Any) -> Chance | None:
    """Classification's ``Problem.chance``: from the labels of the training and validation
    splits (None without a validation split)."""
    y_train, y_val = np.asarray(data.y_train), np.asarray(data.y_val)
    if y_val.ndim != 1 or not len(y_val):
        return None
    accuracy = np.bincount(y_val).max() / len(y_val)
    share = np.bincount(y_train) / len(y_train)
    share = share[share > 0]
    return Chance(float(accuracy), float(2 * np.sqrt(accuracy * (1 - accuracy) / len(y_val))),
                  float(-(share * np.log(share)).sum()))


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
    # Training hyperparameters the problem's loop adds to ``train.TRAIN_DEFAULTS`` (no default
    # value: absent, the loop does without), and (space, origin) -> None, a SpaceError unless a
    # space's values for them are valid.
    train_options: tuple[str, ...] = ()
    check_train: Callable[[Space, str], None] | None = None
    # A training batch as the model sees it: (inputs, targets, hyperparameters, the run's
    # seeded generator) -> (inputs, targets), e.g. random patches of volumes.
    crop: Callable[[torch.Tensor, torch.Tensor, dict[str, Any], torch.Generator],
                   tuple[torch.Tensor, torch.Tensor]] = whole
    # The logits of whole inputs: (model, inputs, hyperparameters) -> logits, e.g. by sliding
    # a window of the size it trained on.
    infer: Callable[[Model, torch.Tensor, dict[str, Any]], torch.Tensor] = at_once
    # A PNG of the final model's predictions beside the truth: (test inputs, test targets,
    # predict: inputs -> predicted labels) -> bytes, logged as ``<final run>_<name>.png``.
    picture: Callable[[np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray]],
                      bytes] | None = None
    # The scores of a network that learned nothing, from the data (None: not known): the rule
    # that stops such trials (``raynas.schedulers.no_learning``) compares with it.
    chance: Callable[[Any], Chance | None] | None = None

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
            out = model(x[start : start + self.eval_batch])  # moves the batch to its device
            target = y[start : start + self.eval_batch].to(out.device, non_blocking=True)
            total += loss(out, target).item() * len(target)
            kept.append(self.keep(out).to(y.device))
        return {"loss": total / len(x), **self.score(torch.cat(kept), y, num_classes)}


def _accuracy(probabilities: torch.Tensor, target: torch.Tensor, num_classes: int
              ) -> dict[str, float]:
    """Accuracy, and the ROC AUC averaged one-vs-rest over the classes the split holds
    (scikit-learn's ``roc_auc_score`` per class); no AUC for a split of one class."""
    scores = {"accuracy": (probabilities.argmax(1) == target).sum().item() / len(target)}
    y, p = target.cpu().numpy(), probabilities.float().cpu().numpy()
    present = np.unique(y)
    if len(present) > 1:
        scores["auc"] = float(np.mean([roc_auc_score(y == c, p[:, c]) for c in present]))
    return scores


CLASSIFICATION = Problem("classification", nn.CrossEntropyLoss, _accuracy, 1024,
                         keep=lambda logits: logits.softmax(1), chance=label_chance)


def problem_of(space: Space) -> Problem:
    """The loss and scores of the space's networks: its model's task's ``Problem``."""
    task = TASKS.get(builder_of(space).task)
    problem = task.load("problem") if task else None
    return problem or CLASSIFICATION


def check_inputs(resolved: Any) -> None:
    """ConfigError unless the data's inputs fit the space's ops (``Op.dims``): volumetric ops
    need volumes, attention and recurrent ops sequences or images."""
    space, data = resolved.space, resolved.data
    dims = len(data.input_shape) - 1
    wrong = sorted({op for field in ("layers.op", "levels.op") for op in space.values(field) or ()
                    if op in OPS and dims not in OPS[op].dims})
    if wrong:
        takes = " or ".join(" ".join(SHAPES[d]) for d in sorted(OPS[wrong[0]].dims))
        raise ConfigError(f"--space {space.name}: op {wrong[0]!r} needs {takes}, the "
                          f"dataset's inputs are {data.input_shape}")
