"""Training a segmenter on patches streamed from disk: the segmentation task's trial and final
training (``Task.trial``, ``Task.final``).

A trial holds its batches, never a split: every epoch reads the training volumes back from the
``PersistentDataset`` cache one batch at a time and samples ``SAMPLES`` patches of
``train.patch_size``³ voxels from each, half centred on foreground and half on background
(MONAI ``RandCropByPosNegLabeld``). Validation and test segment whole volumes one at a time by
sliding a patch-sized window over them (``sliding_window_inference``) and accumulate MONAI's
``DiceMetric`` (and ``HausdorffDistanceMetric`` at the 95th percentile) volume by volume. The
final training reads train and val one after the other (no copy of either).

Arrays data (``npz:`` masks) are served the same way from memory.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader
from monai.data import Dataset as MonaiDataset
from monai.inferers import sliding_window_inference
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from monai.networks.utils import one_hot
from monai.transforms import Compose, RandCropByPosNegLabeld
from torch import nn

from raynas.data import Dataset
from raynas.errors import ConfigError
from raynas.estimation.fidelity import REAL_TASK, TIME_ATTR, ProxyTask
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
from raynas.models import build_model
from raynas.space import Space
from raynas.tasks.segmentation.picture import slices_png
from raynas.tasks.segmentation.problem import PATCH_SIZE, SEGMENTATION, check_volumes
from raynas.tasks.segmentation.volumes import Volumes

SAMPLES = 4  # patches drawn from each training volume per epoch
OVERLAP = 0.25  # of neighbouring sliding windows
SHOWN = 3  # test volumes in the final model's picture
KEYS = ("image", "label")
CPU = torch.device("cpu")

Data = Volumes | Dataset


class Split:
    """A split's volumes, one at a time: from the disk cache (``Volumes``) or from arrays."""

    def __init__(self, data: Data, splits: tuple[str, ...], random: Any = None) -> None:
        if isinstance(data, Volumes):
            self.dataset = data.dataset(splits, random)
            return
        pairs = [(getattr(data, f"x_{s}"), getattr(data, f"y_{s}")) for s in splits]
        items = [{"image": torch.as_tensor(x[i]), "label": torch.as_tensor(y[i][None])}
                 for x, y in pairs for i in range(len(x))]
        self.dataset = MonaiDataset(items, random)

    def __len__(self) -> int:
        return len(self.dataset)

    def subset(self, fraction: float, seed: int) -> Any:
        """The first ``fraction`` of the volumes in a seeded order (nested: smaller shares are
        subsets of larger ones), at least two."""
        if fraction >= 1:
            return self.dataset
        order = np.random.default_rng(seed).permutation(len(self.dataset))
        keep = order[: max(2, math.ceil(fraction * len(order)))]
        return torch.utils.data.Subset(self.dataset, keep.tolist())


def smallest(data: Data) -> tuple[int, int, int]:
    """The smallest extent of any volume along each axis."""
    if isinstance(data, Volumes):
        return data.smallest
    return tuple(data.x_train.shape[2:])  # type: ignore[return-value]


def patch_of(hp: dict[str, Any], data: Data) -> tuple[int, int, int]:
    """The training patch: ``train.patch_size``³, or without one the smallest volume's extents
    (so volumes of different shapes still batch)."""
    size = hp.get(PATCH_SIZE)
    return (int(size),) * 3 if size else smallest(data)


def check_patch_fits(resolved: Any) -> None:
    """ConfigError unless the space's largest patch fits in every (resampled) volume."""
    sizes = resolved.space.values(f"train.{PATCH_SIZE}") or ()
    small = smallest(resolved.data)
    too_big = [s for s in sizes if any(s > extent for extent in small)]
    if too_big:
        raise ConfigError(f"--space {resolved.space.name}: train.{PATCH_SIZE} {max(too_big)} is "
                          f"larger than the smallest volume after resampling, "
                          f"{'x'.join(map(str, small))}; choose patches of at most "
                          f"{min(small)} or a finer spacing")


class Segmenter(Checkpointed):
    """A network with its optimizer and LR schedule, trained epoch by epoch on patches of the
    data's training split (on a proxy task: narrower, on a share of the volumes)."""

    def __init__(self, model: nn.Module, hp: dict[str, Any], data: Data, epochs: int,
                 device: torch.device, generator: torch.Generator) -> None:
        self.model, self.hp, self.data, self.device = model.to(device), hp, data, device
        self.generator = generator
        self.patch = patch_of(hp, data)
        self.opt, self.sched = optimizer(self.model, hp, epochs)
        self.loss = SEGMENTATION.loss()
        self.epoch = 0

    @classmethod
    def of(cls, space: Space, arch: dict[str, Any], data: Data, epochs: int,
           device: torch.device, seed: int, task: ProxyTask = REAL_TASK) -> Segmenter:
        """An architecture of ``space``, seeded from the seed and the architecture."""
        generator = seed_everything(seed, arch)
        model = build_model(space, arch, data.input_shape, data.num_classes, task.width)
        return cls(model, hyperparameters(arch), data, epochs, device, generator)

    def sampler(self) -> Any:
        return RandCropByPosNegLabeld(KEYS, "label", self.patch, pos=1, neg=1,
                                      num_samples=SAMPLES, allow_smaller=False)

    def epochs(self, splits: tuple[str, ...], until: int, fraction: float = 1.0,
               seed: int = 0) -> Iterator[float]:
        """Train up to epoch ``until`` on ``splits`` (a ``fraction`` of their volumes), yielding
        each epoch's mean training loss."""
        sampler = Compose([self.sampler()])
        volumes = Split(self.data, splits, sampler).subset(fraction, seed)
        per_batch = max(1, int(self.hp["batch_size"]) // SAMPLES)
        while self.epoch < until:
            # Patches are drawn from the run's generator, so a restored run goes on as the
            # uninterrupted one would.
            sampler.set_random_state(int(torch.randint(2**31, (1,), generator=self.generator)))
            order = torch.Generator().manual_seed(
                int(torch.randint(2**31, (1,), generator=self.generator)))
            self.model.train()
            total, seen = 0.0, 0
            for batch in DataLoader(volumes, batch_size=per_batch, shuffle=True,
                                    generator=order, num_workers=0):
                images = batch["image"].to(self.device)
                labels = batch["label"][:, 0].long().to(self.device)
                if len(images) < 2 and seen:  # BatchNorm cannot train on a single sample
                    continue
                self.opt.zero_grad(set_to_none=True)
                loss = self.loss(self.model(images), labels)
                loss.backward()
                self.opt.step()
                total += loss.item() * len(images)
                seen += len(images)
            self.sched.step()
            self.epoch += 1
            mean = total / seen
            if not math.isfinite(mean):
                raise FloatingPointError(f"non-finite training loss ({mean}) at epoch {self.epoch}")
            yield mean

    def infer(self, image: torch.Tensor) -> torch.Tensor:
        """The logits of whole volumes, by sliding a patch-sized window over them."""
        return sliding_window_inference(image, self.patch, SEGMENTATION.eval_batch, self.model,
                                        overlap=OVERLAP)

    def scores(self, split: str, hd95: bool = False) -> dict[str, float]:
        self.model.eval()
        return evaluate(self.infer, Split(self.data, (split,)).dataset, self.data.num_classes,
                        self.device, hd95)


@torch.no_grad()
def evaluate(infer: Callable[[torch.Tensor], torch.Tensor], volumes: Any, num_classes: int,
             device: torch.device = CPU, hd95: bool = False
             ) -> dict[str, float]:
    """Mean loss, Dice per foreground class and their mean (``accuracy`` = ``dice``), and with
    ``hd95`` the mean 95th-percentile Hausdorff distance in voxels, accumulated volume by
    volume. A class counts in the volumes whose mask holds it (MONAI's ``ignore_empty``: a
    block of a brain holds few of its regions); one no mask of the split holds is left out.
    ``infer``: a volume (1, C, D, H, W) -> logits."""
    loss = SEGMENTATION.loss()
    dice = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=True)
    distance = HausdorffDistanceMetric(include_background=False, percentile=95,
                                       reduction="mean_batch")
    total = 0.0
    for volume in volumes:
        image = volume["image"][None].to(device)
        label = volume["label"].long().to(device)
        logits = infer(image)
        total += loss(logits, label).item()
        predicted, truth = (one_hot(t, num_classes) for t in (logits.argmax(1, keepdim=True),
                                                               label[None]))
        dice(predicted, truth)
        if hd95:
            with warnings.catch_warnings():  # MONAI warns of every class absent from a volume
                warnings.simplefilter("ignore")
                distance(predicted, truth)
    per_class = {k: d for k, d in enumerate(dice.aggregate().tolist(), start=1)
                 if math.isfinite(d)}
    mean = sum(per_class.values()) / max(1, len(per_class))
    scores = {"loss": total / len(volumes), "accuracy": mean, "dice": mean,
              **{f"dice_class_{k}": d for k, d in per_class.items()}}
    if hd95:
        found = [d for d in distance.aggregate().tolist() if math.isfinite(d)]
        if found:
            scores["hd95"] = sum(found) / len(found)
    return scores


Steps = Iterator[tuple[Segmenter, dict[str, Any]]]


def _steps(space: Space, arch: dict[str, Any], data: Data, settings: TrialSettings,
           state: dict[str, Any] | None, device: torch.device) -> Steps:
    """One report per epoch, or per rung of a proxy task (a fresh network each, trained on
    that rung's share of the volumes and width)."""
    fidelity = settings.fidelity
    if not fidelity.rungs:
        task = fidelity.task
        run = Segmenter.of(space, arch, data, settings.max_epochs, device, settings.seed, task)
        if state:
            run.load(state)
        shown = {} if task.full else task.metrics()
        for loss in run.epochs(("train",), settings.max_epochs, task.data, settings.seed):
            yield run, {"train_loss": loss, "epoch": run.epoch, TIME_ATTR: run.epoch, **shown}
        return
    for rung in range((state or {}).get("rung") or 0, fidelity.rungs):
        task = fidelity.task_at(rung)
        run = Segmenter.of(space, arch, data, settings.max_epochs, device, settings.seed, task)
        losses = list(run.epochs(("train",), settings.max_epochs, task.data, settings.seed))
        yield run, {"train_loss": losses[-1], "epoch": run.epoch, "rung": rung + 1,
                    TIME_ATTR: fidelity.budget(rung), **task.metrics()}


def segmentation_trial(config: dict[str, Any], *, space: Space, data: Data,
                       settings: TrialSettings) -> None:
    """The Tune function trainable: costs, then a report (and checkpoint) per step with the
    validation Dice (``val_accuracy``)."""
    started = start_trial(config, space, data, settings)
    if started is None:
        return
    device = device_for(settings.gpus)
    report_steps(((run, run.scores("val"), progress) for run, progress in
                  _steps(space, started.arch, data, settings, started.state, device)),
                 started, settings)


def first_volumes(data: Data, split: str, count: int) -> list[dict[str, torch.Tensor]]:
    volumes = Split(data, (split,)).dataset
    return [volumes[i] for i in range(min(count, len(volumes)))]


def picture(run: Segmenter) -> bytes:
    """Slices of the first test volumes: image, truth, prediction (``slices_png``)."""
    rows = []
    run.model.eval()
    with torch.no_grad():
        for volume in first_volumes(run.data, "test", SHOWN):
            logits = run.infer(volume["image"][None].to(run.device))
            rows.append((volume["image"].numpy(), volume["label"][0].numpy(),
                         logits.argmax(1)[0].cpu().numpy()))
    same = [r for r in rows if r[0].shape == rows[0][0].shape]  # one shape per picture
    return slices_png(*(np.stack([r[k] for r in same]) for k in range(3)))


def train_final(run: Segmenter, epochs: int) -> Retrained:
    """Train ``run`` on train+val, score it once on the test split (with HD95)."""
    losses = list(run.epochs(("train", "val"), epochs))
    scores = run.scores("test", hd95=True)
    example = first_volumes(run.data, "test", 1)[0]["image"].numpy()[None]
    drawn = picture(run)
    return Retrained(run.model.cpu().eval(), losses, scores, example, drawn, "segmentation.png")


def retrain_segmenter(space: Space, arch: dict[str, Any], data: Data, epochs: int,
                      settings: TrialSettings) -> Retrained:
    """The final training (``Task.final``) of a search's best architecture."""
    torch.set_num_threads(max(1, int(settings.cpus)))
    device = device_for(settings.gpus)
    return train_final(Segmenter.of(space, arch, data, epochs, device, settings.seed), epochs)


def check_segmentation(resolved: Any) -> None:
    """A segmentation search needs volumes its ops fit (``check_volumes``) and patches that
    fit in them."""
    check_volumes(resolved)
    check_patch_fits(resolved)
