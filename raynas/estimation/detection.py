"""Training a detector (``model: detection``) on ``coco:DIR`` data and scoring it by mAP.

Not yet a Tune trial: ``Detector.epochs`` trains one architecture epoch by epoch and yields
the validation mAP after each, for the search to report once it is wired in (docs/detection.md).
Detection needs its own loop: torchvision's detectors compute their losses themselves from
lists of images and targets, which a DataLoader streams from disk (``raynas.detections``). The
optimizer, its schedule and the seeding are the classifier's (``raynas.estimation.train``).

``MeanBoxes`` is the baseline a detector must beat: per class, the mean training box, scored by
how often the class occurs; it sees no pixel of the image.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from raynas.detections import DetectionData, Detections, collate
from raynas.errors import ConfigError
from raynas.estimation.train import hyperparameters, optimizer, seed_everything
from raynas.models import BUILDERS, build_model
from raynas.objectives.detection import BoxMAP
from raynas.space import Space

EVAL_BATCH = 32
CPU = torch.device("cpu")


@dataclass(frozen=True)
class Epoch:
    """One epoch of training: its mean training loss (the sum of the detector's losses) and the
    validation scores (``map``, ``map_50``, ``map_75``)."""

    epoch: int
    loss: float
    scores: dict[str, float]


def check_detection_space(space: Space) -> None:
    if not getattr(BUILDERS.get(space.model), "DETECTION", False):
        raise ConfigError(f"--space {space.name}: model {space.model!r} does not detect "
                          "objects; use a detection space (detection)")


def loader(data: Detections, batch: int, generator: torch.Generator | None = None
           ) -> DataLoader:
    """Batches of (images, targets) read from disk; shuffled when given a generator."""
    return DataLoader(data, batch_size=batch, shuffle=generator is not None,
                      generator=generator, collate_fn=collate)


@torch.no_grad()
def evaluate(model: Any, data: Detections, device: torch.device = CPU
             ) -> dict[str, float]:
    """The mAP of ``model`` (a detector, or anything that maps a list of images to predictions)
    on ``data``."""
    if isinstance(model, nn.Module):
        model.eval()
    metric = BoxMAP()
    for images, targets in loader(data, EVAL_BATCH):
        metric.update(model([im.to(device) for im in images]), targets)
    return metric.compute()


class Detector:
    """An architecture built as a torchvision detector (``model``) with its optimizer, trained
    on ``data.train`` for ``epochs`` epochs by iterating ``epochs()``."""

    def __init__(self, space: Space, arch: dict[str, Any], data: DetectionData, epochs: int,
                 seed: int = 0, device: torch.device = CPU) -> None:
        check_detection_space(space)
        self.generator = seed_everything(seed, arch)
        self.hp = hyperparameters(arch)
        self.data, self.total, self.device = data, epochs, device
        self.model = build_model(space, arch, (3, *data.image_size), data.num_classes).to(device)
        self.opt, self.sched = optimizer(self.model, self.hp, epochs)

    def epochs(self) -> Iterator[Epoch]:
        """Train epoch by epoch, yielding each one's loss and validation mAP."""
        for epoch in range(1, self.total + 1):
            self.model.train()
            total, seen = 0.0, 0
            for images, targets in loader(self.data.train, int(self.hp["batch_size"]),
                                          self.generator):
                if len(images) < 2 and seen:  # BatchNorm cannot train on a single image
                    continue
                losses = self.model([im.to(self.device) for im in images],
                                    [{k: v.to(self.device) for k, v in t.items()}
                                     for t in targets])
                loss = sum(losses.values())
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                total += loss.item() * len(images)
                seen += len(images)
            self.sched.step()
            mean = total / seen
            if not math.isfinite(mean):
                raise FloatingPointError(f"non-finite training loss ({mean}) at epoch {epoch}")
            yield Epoch(epoch, mean, evaluate(self.model, self.data.val, self.device))


class MeanBoxes:
    """The baseline: for every image, each class's mean training box, scored by the class's
    share of the training boxes. It ignores the pixels, so a detector must beat it to have
    learnt anything from them."""

    def __init__(self, train: Detections) -> None:
        boxes, labels = [], []
        for p in train.pictures:  # the annotations, not the augmented images
            boxes += p.boxes
            labels += p.labels
        b, k = torch.tensor(boxes), torch.tensor(labels)
        classes = k.unique()
        self.prediction = {"boxes": torch.stack([b[k == c].mean(0) for c in classes]),
                           "scores": torch.stack([(k == c).float().mean() for c in classes]),
                           "labels": classes}

    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [self.prediction] * len(images)
