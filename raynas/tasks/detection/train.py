"""Training a detector (``model: detection``) on ``coco:DIR`` data and scoring it by mAP: the
Tune trainable of a detection search, and its final retraining.

Detection needs its own epoch loop: torchvision's detectors compute their losses themselves from
lists of images and targets, which a DataLoader streams from disk (``data``). The rest of a
trial is the classifier's (``raynas.estimation.train``): the optimizer and its
schedule, the seeding, the costs measured before training, and the reports and checkpoints of
every epoch (``start_trial``, ``report_steps``), so schedulers such as ASHA stop detectors by
epochs as they stop classifiers. A trial reports ``val_map`` (mAP@[.5:.95]), ``val_map_50`` and
``val_map_75``; ``val_accuracy``, which a search ranks by unless told otherwise, is COCO's
primary metric, ``val_map``.

``MeanBoxes`` is the baseline a detector must beat: per class, the mean training box, scored by
how often the class occurs; it sees no pixel of the image.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from raynas.errors import ConfigError
from raynas.estimation.fidelity import TIME_ATTR
from raynas.estimation.train import (
    Checkpointed,
    Retrained,
    TrialSettings,
    device_for,
    hyperparameters,
    optimizer,
    report_steps,
    seed_everything,
    start_trial,
)
from raynas.models import build_model, builder_of
from raynas.space import Space
from raynas.tasks.detection.boxes import Tiling, detect_tiled
from raynas.tasks.detection.data import DetectionData, Detections, collate
from raynas.tasks.detection.metric import BoxMAP
from raynas.tasks.detection.picture import boxes_png

EVAL_BATCH = 32
CPU = torch.device("cpu")
#: Boxes per image in the served model's output (torchvision's detectors keep at most 100, as
#: COCO's mAP counts).
MAX_BOXES = 100
SHOWN = 6  # held-out test images in the final model's picture of predicted boxes
#: Loader processes at most: a trial's images are decoded beside its training.
MAX_WORKERS = 2


@dataclass(frozen=True)
class Epoch:
    """One epoch of training: its mean training loss (the sum of the detector's losses) and the
    validation scores (``map``, ``map_50``, ``map_75``; none without validation data)."""

    epoch: int
    loss: float
    scores: dict[str, float]


def loader(data: Detections, batch: int, generator: torch.Generator | None = None,
           workers: int = 0, device: torch.device = CPU) -> DataLoader:
    """Batches of (images, targets) decoded from disk by ``workers`` processes (0: in this
    one), into pinned memory for a GPU; shuffled when given a generator."""
    return DataLoader(data, batch_size=batch, shuffle=generator is not None,
                      generator=generator, collate_fn=collate, num_workers=workers,
                      persistent_workers=False, pin_memory=device.type == "cuda")


def workers_for(cpus: float) -> int:
    """Loader processes for a trial of ``cpus`` CPUs: one per CPU beyond the training's own,
    at most ``MAX_WORKERS`` (decoding a batch takes less than training on it)."""
    return min(MAX_WORKERS, max(0, int(cpus) - 1))


def predict(model: Any, images: list[torch.Tensor], window: Tiling | None,
            device: torch.device = CPU) -> list[dict[str, torch.Tensor]]:
    """``model``'s detections on ``images``: directly, or through the sliding ``window`` of the
    tiles it was trained on (``boxes.detect_tiled``)."""
    images = [im.to(device, non_blocking=True) for im in images]
    if window is None:
        return model(images)
    return [detect_tiled(model, im, window, MAX_BOXES) for im in images]


@torch.no_grad()
def evaluate(model: Any, data: Detections, device: torch.device = CPU, workers: int = 0
             ) -> dict[str, float]:
    """The mAP of ``model`` (a detector, or anything that maps a list of images to predictions)
    on ``data``; ignore regions (``iscrowd``) count neither way."""
    if isinstance(model, nn.Module):
        model.eval()
    metric = BoxMAP()
    for images, targets in loader(data, EVAL_BATCH, workers=workers, device=device):
        metric.update(predict(model, images, data.window, device), targets)
    return metric.compute()


def trainable(target: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A target as the detectors train on it: on ``device``, without its ignore regions."""
    kept = ~target["iscrowd"]
    return {"boxes": target["boxes"][kept].to(device), "labels": target["labels"][kept].to(device)}


def check_detects(space: Space) -> None:
    if builder_of(space).task != "detection":
        raise ConfigError(f"--space {space.name}: model {space.model!r} does not detect "
                          "objects; use a detection space (detection)")


class Detector(Checkpointed):
    """An architecture built as a torchvision detector (``model``) with its optimizer, trained
    for ``epochs`` epochs by iterating ``epochs()``; ``state``/``load`` checkpoint it."""

    def __init__(self, space: Space, arch: dict[str, Any], data: DetectionData, epochs: int,
                 seed: int = 0, device: torch.device = CPU, workers: int = 0,
                 model: nn.Module | None = None) -> None:
        """``model``: a detector built elsewhere, trained with ``arch``'s hyperparameters (the
        bench's torchvision reference)."""
        check_detects(space)
        self.generator = seed_everything(seed, arch)
        self.hp = hyperparameters(arch)
        self.data, self.total, self.device, self.workers = data, epochs, device, workers
        if model is None:
            model = build_model(space, arch, data.input_shape, data.num_classes)
        self.model = model.to(device)
        self.opt, self.sched = optimizer(self.model, self.hp, epochs)
        self.epoch = 0

    def epochs(self, train: Detections | None = None, validate: bool = True
               ) -> Iterator[Epoch]:
        """Train epoch by epoch on ``train`` (default: the data's training split), yielding each
        epoch's loss and, with ``validate``, its mAP on the validation split."""
        train = self.data.train if train is None else train
        while self.epoch < self.total:
            self.model.train()
            total, seen = 0.0, 0
            for images, targets in loader(train, int(self.hp["batch_size"]), self.generator,
                                          self.workers, self.device):
                if len(images) < 2 and seen:  # BatchNorm cannot train on a single image
                    continue
                losses = self.model([im.to(self.device, non_blocking=True) for im in images],
                                    [trainable(t, self.device) for t in targets])
                loss = sum(losses.values())
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                total += loss.item() * len(images)
                seen += len(images)
            self.sched.step()
            self.epoch += 1
            mean = total / seen
            if not math.isfinite(mean):
                raise FloatingPointError(f"non-finite training loss ({mean}) at epoch "
                                         f"{self.epoch}")
            yield Epoch(self.epoch, mean, evaluate(self.model, self.data.val, self.device,
                                                   self.workers) if validate else {})


def detection_trial(config: dict[str, Any], *, space: Space, data: DetectionData,
                    settings: TrialSettings) -> None:
    """The Tune function trainable of a detection search: costs, then one report (and
    checkpoint) per epoch with the validation mAP."""
    started = start_trial(config, space, data, settings)
    if started is None:
        return
    detector = Detector(space, started.arch, data, settings.max_epochs, settings.seed,
                        device_for(settings.gpus), workers_for(settings.cpus))
    if started.state:
        detector.load(started.state)
    report_steps(((detector, {"accuracy": e.scores["map"], **e.scores},
                   {"train_loss": e.loss, "epoch": e.epoch, TIME_ATTR: e.epoch})
                  for e in detector.epochs()), started, settings)


class BoxPredictor(nn.Module):
    """A detector as a model is served (MLflow's pytorch flavor, ``raynas export``): a batch
    of images (N, 3, H, W), floats in [0, 1], in; one tensor (N, ``MAX_BOXES``, 6) out, each
    row a box ``x0, y0, x1, y1, score, label`` by descending score. Rows past an image's last
    box are zeros: label 0 is the background, which no box has.

    MLflow keeps it as a pickle: ``torch.export`` (MLflow's default format) stops at the
    post-processing, whose top-k and NMS give outputs of data-dependent shapes."""

    serialization_format = "pickle"  # read by ``raynas.tracking.final_model``
    # Written for ``raynas export`` too: ``torch.jit.script`` (a constant, no Python-only
    # calls) and the tracing ONNX exporter (no box count read as a Python int).
    __constants__ = ["max_boxes"]
    max_boxes = MAX_BOXES

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # torchvision's scripted detectors return (losses, boxes)
            found = self.detector(list(images.unbind(0)))[1]
        else:
            found = self.detector(list(images))
        return torch.stack([self.rows(f) for f in found])

    def rows(self, found: dict[str, torch.Tensor]) -> torch.Tensor:
        """One image's boxes as ``max_boxes`` rows, zeros past the last."""
        boxes = found["boxes"]
        rows = torch.cat([boxes, found["scores"][:, None],
                          found["labels"][:, None].to(boxes.dtype)], dim=1)[:self.max_boxes]
        return torch.cat([rows, rows.new_zeros(self.max_boxes, 6)])[:self.max_boxes]


def retrain_detector(space: Space, arch: dict[str, Any], data: DetectionData, epochs: int,
                     settings: TrialSettings, model: nn.Module | None = None) -> Retrained:
    """Train ``arch`` (or ``model`` with ``arch``'s hyperparameters) on train+val, score it
    once on the held-out test split; the model is served as a ``BoxPredictor``, with a picture
    of its boxes on test images."""
    torch.set_num_threads(max(1, int(settings.cpus)))
    device = device_for(settings.gpus)
    workers = workers_for(settings.cpus)
    detector = Detector(space, arch, data, epochs, settings.seed, device, workers, model)
    both = Detections(data.name, data.train.pictures + data.val.pictures, data.train.transform)
    losses = [e.loss for e in detector.epochs(both, validate=False)]
    scores = evaluate(detector.model, data.test, device, workers)
    model = BoxPredictor(detector.model.cpu())
    shown = [data.test[i] for i in range(min(SHOWN, len(data.test)))]
    images = [image for image, _ in shown]
    with torch.no_grad():
        predictions = predict(model.detector, images, data.test.window)
    picture = boxes_png(images, predictions, [target for _, target in shown], data.classes)
    same = [im for im in images if im.shape == images[0].shape][:2]
    return Retrained(model, losses, {"accuracy": scores["map"], **scores},
                     np.stack([im.numpy() for im in same]), picture, "detections.png")


class MeanBoxes:
    """The baseline: for every image, each class's mean training box, scored by the class's
    share of the training boxes. It ignores the pixels, so a detector must beat it to have
    learnt anything from them."""

    def __init__(self, train: Detections) -> None:
        boxes, labels = [], []
        for p in train.pictures:  # the annotations, not the augmented images
            kept = [i for i, crowd in enumerate(p.crowd_flags) if not crowd]
            boxes += [p.boxes[i] for i in kept]
            labels += [p.labels[i] for i in kept]
        b, k = torch.tensor(boxes), torch.tensor(labels)
        classes = k.unique()
        self.prediction = {"boxes": torch.stack([b[k == c].mean(0) for c in classes]),
                           "scores": torch.stack([(k == c).float().mean() for c in classes]),
                           "labels": classes}

    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [self.prediction] * len(images)
