"""Full training as a performance estimate: the Tune trainable and the final retraining.

Both use one epoch loop, so an architecture trains the same way during the search and after it.
Data are small in-memory tensors, so batches are sliced from them directly (a ``DataLoader``
would only add worker and collation overhead here).
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import tune
from torch import nn

from raynas.data import Dataset
from raynas.errors import SpaceError, show
from raynas.estimation.costs import EPOCH_S, CostSettings, judged, measure, rejected
from raynas.estimation.fidelity import REAL_TASK, TIME_ATTR, Fidelity, ProxyTask, nested_order
from raynas.estimation.problem import CLASSIFICATION, Problem, problem_of
from raynas.estimation.task import TASKS
from raynas.models import BUILDERS, build_model
from raynas.objectives.constraints import FEASIBLE, VIOLATIONS
from raynas.objectives.scalarize import CALIBRATION_SAMPLES
from raynas.space import Space, arch_hash
from raynas.space.nodes import FloatRange, Group, IntRange

OPTIMIZERS = ("adam", "adamw", "sgd")
TRAIN_DEFAULTS = {"lr": 1e-3, "weight_decay": 0.0, "batch_size": 64, "optimizer": "adam"}
EVAL_BATCH = CLASSIFICATION.eval_batch  # a classifier's (``Problem.eval_batch``)
#: A running epoch is stopped past this many times its predicted length (``epoch_s``).
OVERRUN = 3.0
TOO_SLOW = "too-slow"  # ``stopped_by`` of a trial whose epoch overran its prediction


class TooSlow(Exception):
    """An epoch ran far past its prediction (``Run.epoch_limit_s``); ``epochs``: whole epochs
    done before it."""

    def __init__(self, epochs: int, message: str) -> None:
        super().__init__(message)
        self.epochs = epochs


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of a search shares (the architecture comes from the config)."""

    fidelity: Fidelity
    seed: int = 0
    cpus: float = 1.0
    gpus: float = 0.0
    costs: CostSettings = CostSettings()  # constraints, latency measurement, scalarisation
    # A checkpoint after the last step too: only PBT needs it (it clones any trial's latest
    # state); otherwise nothing resumes a finished trial, and it costs ~10 ms a trial.
    checkpoint_last: bool = False

    @property
    def max_epochs(self) -> int:
        return self.fidelity.max_epochs


def check_train_space(space: Space, origin: str) -> None:
    """The ``train`` group, if any, must hold hyperparameters the training loop understands:
    the shared ones (``TRAIN_DEFAULTS``) and those the space's problem adds
    (``Problem.train_options``, checked by its ``check_train``)."""
    train = space.domain("train")
    if train is not None and not isinstance(train, Group):
        raise SpaceError(f"{origin}: space.train: must be a mapping of training "
                         f"hyperparameters; known: {', '.join(TRAIN_DEFAULTS)}")
    problem = problem_of(space)
    known = (*TRAIN_DEFAULTS, *problem.train_options)
    for field in space.fields("train"):
        if field not in known:
            raise SpaceError(f"{origin}: space.train.{field}: {_elsewhere(field)}; "
                             f"known: {', '.join(known)}")
    if problem.check_train is not None:
        problem.check_train(space, origin)
    if space.domain("train.optimizer") is not None:
        optimizers = space.values("train.optimizer")
        if optimizers is None:
            raise SpaceError(f"{origin}: space.train.optimizer: must be a constant or a choice")
        for name in optimizers:
            if name not in OPTIMIZERS:
                raise SpaceError(f"{origin}: space.train.optimizer: unknown optimizer "
                                 f"{show(name)}; known: {', '.join(OPTIMIZERS)}")
    batch_size = space.domain("train.batch_size")
    if batch_size is not None:
        sizes = [batch_size.low] if isinstance(batch_size, IntRange) else space.values(
            "train.batch_size")
        if sizes is None or any(not isinstance(v, int) or isinstance(v, bool) or v < 1
                                for v in sizes):
            raise SpaceError(f"{origin}: space.train.batch_size: must be positive integers")
    for field, zero_ok in (("lr", False), ("weight_decay", True)):
        node = space.domain(f"train.{field}")
        if node is None:
            continue
        values = [node.low] if isinstance(node, IntRange | FloatRange) else space.values(
            f"train.{field}")
        if values is None or any(not isinstance(v, int | float) or isinstance(v, bool)
                                 or v < 0 or (v == 0 and not zero_ok) for v in values):
            rule = "numbers >= 0" if zero_ok else "positive numbers"
            raise SpaceError(f"{origin}: space.train.{field}: must be {rule}")


def _elsewhere(field: str) -> str:
    """Why a training hyperparameter is refused: another task's problem adds it (say which
    models take it), or none does."""
    for task in TASKS.values():
        problem: Problem | None = task.load("problem")
        if problem is not None and field in problem.train_options:
            models = [b.name for b in BUILDERS.values() if b.task in (task.models or ())]
            return f"only for {task.name} models (e.g. {', '.join(models)})"
    return "unknown training hyperparameter"


def hyperparameters(arch: dict[str, Any]) -> dict[str, Any]:
    return {**TRAIN_DEFAULTS, **arch.get("train", {})}


def device_for(gpus: float) -> torch.device:
    return torch.device("cuda" if gpus > 0 and torch.cuda.is_available() else "cpu")


def optimizer(model: nn.Module, hp: dict[str, Any], epochs: int
              ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The optimizer ``hp`` names (``hyperparameters``) and its cosine schedule over
    ``epochs``."""
    kwargs = {"lr": hp["lr"], "weight_decay": hp["weight_decay"]}
    if hp["optimizer"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), momentum=0.9, nesterov=True, **kwargs)
    else:
        cls = torch.optim.AdamW if hp["optimizer"] == "adamw" else torch.optim.Adam
        opt = cls(model.parameters(), **kwargs)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))


def seed_everything(seed: int, arch: dict[str, Any]) -> torch.Generator:
    """Seed torch from the search seed and the architecture, so a trial is reproducible."""
    value = (seed * 1_000_003 + int(arch_hash(arch), 16)) % 2**63
    torch.manual_seed(value)
    return torch.Generator().manual_seed(value)


def apply_hyperparameters(opt: torch.optim.Optimizer,
                          sched: torch.optim.lr_scheduler.CosineAnnealingLR,
                          hp: dict[str, Any]) -> None:
    """Make ``hp``'s lr and weight decay the ones in force after loading a checkpoint.

    A plain resume changes nothing; a PBT exploit loads another trial's state under
    mutated hyperparameters, which the saved optimizer/scheduler state would otherwise undo.
    """
    lr = hp["lr"]
    sched.base_lrs = [lr] * len(opt.param_groups)
    progress = math.cos(math.pi * sched.last_epoch / sched.T_max)
    for group in opt.param_groups:
        group["initial_lr"] = lr
        group["weight_decay"] = hp["weight_decay"]
        group["lr"] = sched.eta_min + (lr - sched.eta_min) * (1 + progress) / 2


class Checkpointed:
    """What a training loop saves and restores at every step: its model, optimizer, LR
    schedule, epoch and random state (a ``Run``, a detector)."""

    model: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.CosineAnnealingLR
    generator: torch.Generator
    hp: dict[str, Any]
    epoch: int

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(), "epoch": self.epoch,
                "rng": self.generator.get_state()}

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.generator.set_state(state["rng"])
        self.epoch = state["epoch"]
        apply_hyperparameters(self.opt, self.sched, self.hp)  # PBT may have mutated them


class Run(Checkpointed):
    """A model with its optimizer and LR schedule, trained epoch by epoch; on a proxy task
    (``task``) the model is narrower and sees downsampled inputs. The loss, the scores, the
    crop of a training batch and the inference over whole inputs are the space's problem's
    (``problem_of``)."""

    def __init__(self, space: Space, arch: dict[str, Any], input_shape: tuple[int, ...],
                 num_classes: int, epochs: int, device: torch.device, seed: int,
                 task: ProxyTask = REAL_TASK) -> None:
        self.generator = seed_everything(seed, arch)
        self.hp = hyperparameters(arch)
        self.device = device
        self.task = task
        self.problem = problem_of(space)
        self.num_classes = num_classes
        self.input_shape = task.shape(input_shape)
        self.model = build_model(space, arch, self.input_shape, num_classes,
                                 task.width).to(device)
        self.opt, self.sched = optimizer(self.model, self.hp, epochs)
        self.loss = self.problem.loss()
        self.epoch = 0
        self.steps = 0  # optimiser steps taken (this process: a restored run counts anew)
        # Set (seconds), an epoch that runs past it stops with ``TooSlow``: the time budget's
        # check on a candidate whose prediction was far off.
        self.epoch_limit_s: float | None = None

    def epochs(self, x: torch.Tensor, y: torch.Tensor, until: int) -> Iterator[float]:
        """Train up to epoch ``until``, yielding each epoch's mean training loss."""
        x = self.inputs(x)
        batch = int(self.hp["batch_size"])
        while self.epoch < until:
            self.model.train()
            order = torch.randperm(len(x), generator=self.generator).to(x.device)
            total, seen = 0.0, 0
            began = time.perf_counter()
            for start in range(0, len(x), batch):
                idx = order[start : start + batch]
                if len(idx) < 2 and seen:  # BatchNorm cannot train on a single sample
                    continue
                self.opt.zero_grad(set_to_none=True)
                inputs, targets = (t.to(self.device, non_blocking=True)
                                   for t in self.batch(x[idx], y[idx]))
                loss = self.loss(self.model(inputs), targets)
                loss.backward()
                self.opt.step()
                total += loss.item() * len(idx)
                seen += len(idx)
                self.steps += 1
                spent = time.perf_counter() - began
                if self.epoch_limit_s is not None and spent > self.epoch_limit_s:
                    raise TooSlow(self.epoch, f"epoch {self.epoch + 1} ran {spent:.0f} s, past "
                                              f"{self.epoch_limit_s:.0f} s ({OVERRUN:g} x its "
                                              "predicted epoch_s)")
            self.sched.step()
            self.epoch += 1
            mean = total / seen
            if not math.isfinite(mean):
                raise FloatingPointError(f"non-finite training loss ({mean}) at epoch {self.epoch}")
            yield mean

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """(mean loss, accuracy) on a split (``accuracy``: the problem's primary score)."""
        scores = self.scores(x, y)
        return scores["loss"], scores["accuracy"]

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch as the model sees it (``Problem.crop``, seeded from this run)."""
        return self.problem.crop(x, y, self.hp, self.generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits for whole inputs (``Problem.infer``)."""
        return self.problem.infer(self.model, x.to(self.device, non_blocking=True), self.hp)

    def scores(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """The mean loss and the problem's scores on a split (``Problem.score``)."""
        self.model.eval()
        return self.problem.evaluate(self.forward, self.inputs(x), y, self.num_classes,
                                     self.loss)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted labels (per input, or per voxel) of a few inputs."""
        self.model.eval()
        return self.forward(self.inputs(x)).argmax(1)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs at the proxy task's resolution: area interpolation averages each output
        pixel's footprint, so downsampling does not alias."""
        if tuple(x.shape[1:]) == self.input_shape:
            return x
        return nn.functional.interpolate(x, size=self.input_shape[1:], mode="area")


def tensors(device: torch.device, *arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.as_tensor(np.array(a), device=device) for a in arrays]


def host(*arrays: np.ndarray) -> list[torch.Tensor]:
    """A trial's splits as CPU tensors (pinned where CUDA is, so batches copy to the GPU
    asynchronously): the epoch loop moves one batch at a time, so trials sharing a GPU
    (``--gpus-per-trial 0.25``) do not each hold the dataset on it."""
    out = [torch.as_tensor(np.array(a)) for a in arrays]
    return [t.pin_memory() for t in out] if torch.cuda.is_available() else out


def train_trial(config: dict[str, Any], *, space: Space, data: Dataset,
                settings: TrialSettings) -> None:
    """The Tune function trainable: decode, build, train; report and checkpoint at every step
    of the fidelity (each epoch, or each rung of the proxy task)."""
    started = start_trial(config, space, data, settings)
    if started is None:
        return
    device = device_for(settings.gpus)

    predicted = started.costs.get(EPOCH_S)

    def new_run(task: ProxyTask) -> Run:
        run = Run(space, started.arch, data.input_shape, data.num_classes, settings.max_epochs,
                  device, settings.seed, task)
        run.epoch_limit_s = None if predicted is None else OVERRUN * predicted + 5
        return run

    x_train, y_train, x_val, y_val = host(data.x_train, data.y_train, data.x_val, data.y_val)
    steps = _by_rung if settings.fidelity.rungs else _by_epoch
    try:
        report_steps(((run, run.scores(x_val, y_val), progress) for run, progress in
                      steps(new_run, started.state, x_train, y_train, settings)), started,
                     settings)
    except TooSlow as exc:  # stopped, like a candidate rejected by its costs, saying why
        tune.report({**rejected(started.fixed, settings.costs), FEASIBLE: False,
                     VIOLATIONS: str(exc), "stopped_by": TOO_SLOW, "epoch": exc.epochs,
                     TIME_ATTR: exc.epochs})


@dataclass(frozen=True)
class Started:
    """A trial that is to train: its architecture, the state of its checkpoint (if Tune
    restored one), its costs and the metrics every report repeats."""

    arch: dict[str, Any]
    state: dict[str, Any] | None
    costs: dict[str, Any]
    fixed: dict[str, Any]


def start_trial(config: dict[str, Any], space: Space, data: Any,
                settings: TrialSettings) -> Started | None:
    """What every training trainable does first: threads, architecture, the restored
    checkpoint and the costs; None (after the one report) for a trial its costs reject."""
    torch.set_num_threads(max(1, int(settings.cpus)))
    arch = space.decode(config)
    device = device_for(settings.gpus)
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / "state.pt", map_location=device, weights_only=False)
    # Costs once per trial, before training, of the architecture itself (not of its narrower
    # proxy-task model); a restored trial keeps the ones it measured. See ``costs``.
    costs = (state or {}).get("costs") or measure(
        space, arch, data, settings.costs, device, int(hyperparameters(arch)["batch_size"]))
    fixed = {**costs, "arch_hash": arch_hash(arch),
             "node_id": ray.get_runtime_context().get_node_id()}
    if costs.get(FEASIBLE) is False:  # rejected: no epoch is spent on it
        tune.report({**rejected(fixed, settings.costs), "epoch": 0, TIME_ATTR: 0})
        return None
    return Started(arch, state, costs, fixed)


def report_steps(steps: Iterator[tuple[Any, dict[str, float], dict[str, Any]]],
                 started: Started, settings: TrialSettings) -> None:
    """Report every step (a run with ``hp`` and ``state()``, its validation scores, its
    progress) to Tune, with a checkpoint to resume from."""
    for run, scores, progress in steps:
        # lr as a metric: PBT changes it mid-trial (exploit + explore), and MLflow shows when.
        metrics = {**{f"val_{name}": value for name, value in scores.items()},
                   "lr": run.hp["lr"], **progress, **started.fixed}
        metrics.update(judged(metrics, settings.costs))
        if progress[TIME_ATTR] >= settings.fidelity.max_budget and not settings.checkpoint_last:
            tune.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as folder:
            torch.save({**run.state(), "rung": progress.get("rung"), "costs": started.costs},
                       Path(folder) / "state.pt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


Steps = Iterator[tuple["Run", dict[str, Any]]]


def _subset(x: torch.Tensor, y: torch.Tensor, fraction: float,
            seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The proxy task's share of the training data: a prefix of the nested, class-balanced
    order (``nested_order``), so smaller shares are subsets of larger ones."""
    if fraction >= 1:
        return x, y
    labels = y if y.dim() == 1 else y.new_zeros(len(y))  # masks: volumes in a random order
    order = torch.as_tensor(nested_order(labels.cpu().numpy(), seed), device=x.device)
    keep = order[: max(2, math.ceil(fraction * len(order)))]
    return x[keep], y[keep]


def _by_epoch(new_run: Callable[[ProxyTask], Run], state: dict | None, x: torch.Tensor,
              y: torch.Tensor, settings: TrialSettings) -> Steps:
    """Epoch fidelity: one model, a report after every epoch (budget = epochs trained)."""
    task = settings.fidelity.task
    run = new_run(task)
    if state:
        run.load(state)
    shown = {} if task.full else task.metrics()
    for train_loss in run.epochs(*_subset(x, y, task.data, settings.seed), settings.max_epochs):
        yield run, {"train_loss": train_loss, "epoch": run.epoch, "steps": run.steps,
                    TIME_ATTR: run.epoch, **shown}


def _by_rung(new_run: Callable[[ProxyTask], Run], state: dict | None, x: torch.Tensor,
             y: torch.Tensor, settings: TrialSettings) -> Steps:
    """Proxy-task rungs: a fresh model per rung, trained on that rung's task (see
    ``Fidelity``); a restored trial goes on with the first rung it had not reported."""
    fidelity = settings.fidelity
    for rung in range((state or {}).get("rung") or 0, fidelity.rungs):
        task = fidelity.task_at(rung)
        run = new_run(task)
        losses = list(run.epochs(*_subset(x, y, task.data, settings.seed), settings.max_epochs))
        yield run, {"train_loss": losses[-1], "epoch": run.epoch, "steps": run.steps,
                    "rung": rung + 1,
                    TIME_ATTR: fidelity.budget(rung), **task.metrics()}


@dataclass
class Retrained:
    """A final training: the model, and its scores on the held-out test split (``accuracy``,
    the task's primary score, e.g. a mean Dice or a mAP; ``loss`` where the model has one at
    test time; the task's other scores)."""

    model: nn.Module
    train_loss: list[float]  # per epoch
    test_scores: dict[str, float]
    example: np.ndarray  # a few test inputs: the logged model's input example
    # A PNG of predictions beside the ground truth (``Problem.picture``; a detector's boxes),
    # logged as ``<final run>_<picture_name>``.
    picture: bytes | None = None
    picture_name: str = "predictions.png"

    @property
    def test_accuracy(self) -> float:
        return self.test_scores["accuracy"]

    def metrics(self) -> dict[str, float]:
        """The test scores as MLflow metrics: ``test_accuracy``, ``test_loss``, ..."""
        return {f"test_{k}": v for k, v in self.test_scores.items()}


def retrain(space: Space, arch: dict[str, Any], data: Dataset, epochs: int,
            settings: TrialSettings) -> Retrained:
    """Train ``arch`` on train+val (or the share ``settings.fidelity.task.data`` of it, which
    the driver sets only when a time budget leaves less than one epoch), evaluate once on the
    held-out test split.

    Runs as a Ray task with the trial's resources (see ``experiment``), so it lands on a worker
    (and its GPU) rather than the driver, with as many threads as it has CPUs.
    """
    torch.set_num_threads(max(1, int(settings.cpus)))
    device = device_for(settings.gpus)
    run = Run(space, arch, data.input_shape, data.num_classes, epochs, device, settings.seed)
    x, y, x_test, y_test = host(
        np.concatenate([data.x_train, data.x_val]),
        np.concatenate([data.y_train, data.y_val]), data.x_test, data.y_test)
    # a time budget too short for one whole epoch: the share of train+val that fits
    losses = list(run.epochs(*_subset(x, y, settings.fidelity.task.data, settings.seed), epochs))
    scores = run.scores(x_test, y_test)
    draw = run.problem.picture
    picture = None if draw is None else draw(
        data.x_test, data.y_test, lambda a: run.predict(*host(a)).cpu().numpy())
    return Retrained(run.model.cpu().eval(), losses, scores, data.x_test[:5], picture,
                     f"{run.problem.name}.png")


def calibrate(space: Any, data: Any, costs: Any, gpus: float, cpus: float, seed: int,
              timed: bool, count: int = CALIBRATION_SAMPLES,
              seconds: float | None = None) -> list[dict[str, float]]:
    """Cost metrics of ``count`` random architectures of ``space``, measured as a trial would
    (``timed``: latency and memory too; run it then as a Ray task with the trials' resources,
    so it lands where they do - params and FLOPs are the same anywhere). With ``seconds``,
    no new architecture is measured once that much time has passed (one is, always)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cpus)))
    start = time.monotonic()
    try:
        rng = random.Random(seed)
        archs = [space.sample(rng) for _ in range(count)]
        measured = []
        for arch in archs:
            if measured and seconds is not None and time.monotonic() - start > seconds:
                break
            measured.append(measure(space, arch, data, costs, device_for(gpus),
                                    int(hyperparameters(arch)["batch_size"]), timed))
        return measured
    finally:
        torch.set_num_threads(threads)
