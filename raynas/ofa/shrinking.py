"""Once-for-All training: one elastic supernet (``ofa.supernets``: the ``ofa`` model's, or
another model's such as the sequences plug-in's elastic transformer) trained by progressive
shrinking, so that every sub-network of its space works with the inherited weights.

Phases, each ``epochs_per_phase`` epochs with a fresh optimizer and cosine schedule (OFA,
Cai et al. 2020, Sec. 3.2), are the supernet's ``PHASES``: for ``ofa``, ``full`` trains the
largest network; ``kernel`` also samples kernel sizes; ``depth`` also depths; ``width`` also
expand ratios, after the hidden channels are sorted by importance. The resolution is sampled in
every phase (the supernet's ``ALWAYS``). Outside ``full`` each batch trains the
largest network on the labels and one sampled sub-network on the labels plus in-place knowledge
distillation (the KL divergence to the largest network's soft predictions on the same batch, as
in BigNAS, Yu et al. 2020; OFA distils from a separately kept copy of the full network, which
costs another forward pass and the memory of a second network). OFA also widens each shrinking
phase in two steps (depth {4, 3} then {4, 3, 2}); here a phase opens all of its values at once.
"""

from __future__ import annotations

import math
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from ray import tune
from torch import nn
from torch.nn import functional as F

from raynas.data import Dataset
from raynas.errors import ConfigError
from raynas.estimation.fidelity import TIME_ATTR
from raynas.estimation.oneshot import batches, evaluate, recalibrate
from raynas.estimation.train import TrialSettings, device_for, tensors
from raynas.ofa.supernets import supernet_of
from raynas.space import Arch, Space

BATCH_SIZE = 64
STEPS_PER_EPOCH = 4  # at least, on a small training split (50 series of a UCR set: 4 batches)
KD_RATIO = 1.0  # weight of the distillation term in a sub-network's loss
BN_BATCHES = 4  # training batches that re-estimate BatchNorm for an evaluated sub-network
CHECKPOINT = "state.pt"


def sample_arch(supernet: Any, phase: str, rng: random.Random) -> Arch:
    """A sub-network of ``phase``: its dimensions (and those sampled always, the resolution)
    drawn uniformly, the others at their largest."""
    sampled = {*supernet.PHASES[phase], *supernet.ALWAYS}
    return supernet.choices.arch(
        lambda options, what: rng.choice(options) if what in sampled else max(options))


def batch_size(samples: int) -> int:
    """``BATCH_SIZE``, smaller on a small training split so that an epoch still takes
    ``STEPS_PER_EPOCH`` steps: 40 series in one batch would train for one step an epoch."""
    return max(1, min(BATCH_SIZE, samples // STEPS_PER_EPOCH))


def learning_rate(supernet: Any, phase: str) -> float:
    """Adam's rate in ``phase``: the supernet's ``LR`` of ``full`` or of the shrinking phases."""
    return supernet.LR["full" if phase == "full" else "shrinking"]


def distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) on the soft predictions (temperature 1), the teacher detached."""
    return F.kl_div(F.log_softmax(student, 1), F.softmax(teacher.detach(), 1),
                    reduction="batchmean")


class ProgressiveShrinking:
    """An elastic supernet, its optimizer and sampler, trained epoch by epoch through its
    ``PHASES``; ``state``/``load`` make it resumable at any epoch."""

    def __init__(self, space: Space, input_shape: tuple[int, ...], num_classes: int,
                 epochs_per_phase: int, device: torch.device, seed: int) -> None:
        if epochs_per_phase < 1:
            raise ConfigError("--epochs-per-phase: must be >= 1")
        torch.manual_seed(seed)
        self.supernet = supernet_of(space, input_shape, num_classes).to(device)
        self.phases = list(self.supernet.PHASES)
        self.epochs_per_phase = epochs_per_phase
        self.rng = random.Random(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.opt: torch.optim.Optimizer | None = None
        self.sched: Any = None

    @property
    def epochs(self) -> int:
        return len(self.phases) * self.epochs_per_phase

    @property
    def phase(self) -> str:
        return self.phases[min(self.epoch // self.epochs_per_phase, len(self.phases) - 1)]

    def start_phase(self, sort: bool = True) -> None:
        """A fresh optimizer and cosine schedule for the phase, after the supernet's own
        preparation (``ofa``: sorting channels before ``width``; not again when a checkpoint
        resumes the phase)."""
        if sort:
            self.supernet.start_phase(self.phase)
        self.opt = torch.optim.Adam(self.supernet.parameters(),
                                    lr=learning_rate(self.supernet, self.phase))
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt,
                                                                T_max=self.epochs_per_phase)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """One batch: the largest network on the labels; outside ``full``, also a sampled
        sub-network, distilled from the largest. Returns the losses."""
        net = self.supernet
        largest = net.choices.arch(lambda options, what: self.rng.choice(options)
                                   if what in net.ALWAYS else max(options))
        self.opt.zero_grad(set_to_none=True)
        teacher = net.use(largest)(x)
        loss = F.cross_entropy(teacher, y)
        losses = {"train_loss": loss.item()}
        if self.phase != "full":
            student = net.use(sample_arch(net, self.phase, self.rng))(x)
            kd = distillation(student, teacher)
            loss = loss + F.cross_entropy(student, y) + KD_RATIO * kd
            losses["kd_loss"] = kd.item()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        self.opt.step()
        return losses

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """One epoch of the current phase; the mean losses."""
        if self.epoch % self.epochs_per_phase == 0 or self.opt is None:
            self.start_phase()
        self.supernet.train()
        totals: dict[str, float] = {}
        steps = 0
        for idx in batches(len(x), batch_size(len(x)), self.generator):
            idx = idx.to(x.device)
            for key, value in self.step(x[idx], y[idx]).items():
                totals[key] = totals.get(key, 0.0) + value
            steps += 1
        self.sched.step()
        self.epoch += 1
        means = {k: v / steps for k, v in totals.items()}
        if not math.isfinite(means["train_loss"]):
            raise FloatingPointError(f"non-finite training loss at epoch {self.epoch}")
        return means

    def state(self) -> dict[str, Any]:
        return {"supernet": self.supernet.state_dict(), "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(), "epoch": self.epoch,
                "rng": self.rng.getstate(), "generator": self.generator.get_state(),
                "epochs_per_phase": self.epochs_per_phase}

    def load(self, state: dict[str, Any]) -> None:
        self.supernet.load_state_dict(state["supernet"])
        self.epoch = state["epoch"]
        if self.epoch % self.epochs_per_phase:  # mid-phase: that phase's optimizer goes on
            self.start_phase(sort=False)
            self.opt.load_state_dict(state["opt"])
            self.sched.load_state_dict(state["sched"])
        self.rng.setstate(state["rng"])
        self.generator.set_state(state["generator"])


def inherited_accuracy(supernet: Any, arch: Arch, x_train: torch.Tensor,
                       x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> float:
    """Accuracy of ``arch`` with the supernet's weights on (x, y), after re-estimating
    BatchNorm on ``BN_BATCHES`` training batches for it."""
    supernet.use(arch)
    recalibrate(supernet, x_train, BN_BATCHES, BATCH_SIZE, seed)
    return evaluate(supernet, x, y)[1]


def load_supernet(path: Path, space: Space, data: Dataset) -> Any:
    """The supernet (on the CPU) of a weights file of ``raynas ofa train``."""
    supernet = supernet_of(space, data.input_shape, data.num_classes)
    state = torch.load(path, map_location="cpu", weights_only=False)
    supernet.load_state_dict(state["supernet"])
    return supernet


def ofa_trial(config: dict[str, Any], *, space: Space, data: Dataset, settings: TrialSettings,
              epochs_per_phase: int) -> None:
    """A Tune function trainable: progressive shrinking through every phase, reporting and
    checkpointing each epoch (a retried or resumed trial goes on from its last epoch)."""
    torch.set_num_threads(max(1, int(settings.cpus)))
    device = device_for(settings.gpus)
    training = ProgressiveShrinking(space, data.input_shape, data.num_classes, epochs_per_phase,
                                    device, settings.seed)
    if checkpoint := tune.get_checkpoint():
        with checkpoint.as_directory() as folder:
            training.load(torch.load(Path(folder) / CHECKPOINT, map_location=device,
                                     weights_only=False))
    x, y, x_val, y_val = tensors(device, data.x_train, data.y_train, data.x_val, data.y_val)
    net = training.supernet
    while training.epoch < training.epochs:
        phase = training.phase
        losses = training.train_epoch(x, y)
        metrics = {**losses, "phase": training.phases.index(phase) + 1, "epoch": training.epoch,
                   TIME_ATTR: training.epoch,
                   "val_accuracy": inherited_accuracy(net, net.choices.largest(), x, x_val,
                                                      y_val, settings.seed),
                   "val_accuracy_smallest": inherited_accuracy(
                       net, net.choices.smallest(), x, x_val, y_val, settings.seed)}
        with tempfile.TemporaryDirectory() as folder:
            torch.save(training.state(), Path(folder) / CHECKPOINT)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def progress_line(epochs: int, phases: list[str]) -> Callable[[dict[str, Any]], str]:
    """A progress line for each reported epoch of ``ofa_trial``."""

    def line(result: dict[str, Any]) -> str:
        return (f"ofa epoch {result['epoch']}/{epochs} ({phases[int(result['phase']) - 1]}): "
                f"train_loss {result['train_loss']:.4f}, val_accuracy largest "
                f"{result['val_accuracy']:.4f}, smallest {result['val_accuracy_smallest']:.4f}")

    return line
