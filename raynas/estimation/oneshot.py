"""One-shot NAS by weight sharing: train one supernet, then score architectures by inheriting
its weights instead of training each of them.

Stage 1 trains the supernet in one Tune trial, one sampled path per batch: uniformly (SPOS, Guo
et al. 2020) or from an ENAS controller (Pham et al. 2018) that learns by REINFORCE which paths
do well on validation batches; it is our ``ReinforceController`` driven in-process. Stage 2 is
an ordinary search (any strategy; evolution by default) whose trials are cheap: load the
supernet checkpoint, recalibrate BatchNorm on a few training batches for the candidate's path
(the shared running statistics belong to no single path), measure validation accuracy. The best
candidate is then retrained from scratch like the winner of any search.
"""

from __future__ import annotations

import random
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ray import tune
from ray.tune import Callback
from torch import nn

from raynas.data import Dataset
from raynas.errors import RaynasError
from raynas.estimation.fidelity import TIME_ATTR
from raynas.estimation.train import EVAL_BATCH, TrialSettings, device_for, tensors
from raynas.models import build_model
from raynas.models.supernet import Supernet
from raynas.objectives.measure import count_flops, count_params
from raynas.space import Arch, Space, arch_hash
from raynas.tracking.store import last_line, trial_error
from raynas.tracking.tracker import MLflowTracker, SearchRecord

SAMPLERS = ("spos", "enas")
# The supernet's own training recipe (SPOS: SGD with momentum, cosine schedule, clipping).
SUPERNET_HP = {"lr": 0.05, "momentum": 0.9, "weight_decay": 3e-4, "batch_size": 64}
CONTROLLER_STEPS = 20  # ENAS: controller samples scored per epoch (5 REINFORCE updates of 4)
PROBES = 3  # sampled paths whose mean accuracy the supernet trial reports each epoch
BN_BATCHES = 4  # training batches that re-estimate BatchNorm statistics for a candidate
STAGE = "supernet"  # the stage's Tune experiment (under the search's) and its MLflow run key


def fair_paths(space: Space, rng: random.Random, fixed: dict[str, Any]) -> list[Arch]:
    """FairNAS's strictly fair sampling (Chu et al., ICCV 2021): m paths that together use every
    candidate op of every searched edge exactly once (m: the most ops an edge has; an edge with
    fewer repeats a shuffle of its own), so no op's weights get more updates than another's."""
    flat = space.encode(space.sample(rng))
    options = {d.key: d.param.options() for d in space.decisions() if d.key not in fixed}
    options = {k: o for k, o in options.items() if o is not None and len(o) > 1}
    m = max((len(o) for o in options.values()), default=1)
    shuffled = {k: rng.sample(o, len(o)) for k, o in options.items()}
    return [space.decode({**flat, **fixed, **{k: o[i % len(o)] for k, o in shuffled.items()}})
            for i in range(m)]


def batches(n: int, size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A shuffled epoch of index batches; a last batch of one sample is dropped (BatchNorm)."""
    order = torch.randperm(n, generator=generator)
    return [b for b in order.split(size) if len(b) > 1]


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode."""
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(x), EVAL_BATCH):
        out = model(x[start : start + EVAL_BATCH])
        target = y[start : start + EVAL_BATCH]
        loss += nn.functional.cross_entropy(out, target, reduction="sum").item()
        correct += (out.argmax(1) == target).sum().item()
    return loss / len(x), correct / len(x)


@torch.no_grad()
def recalibrate(model: nn.Module, x: torch.Tensor, num_batches: int, batch_size: int,
                seed: int) -> None:
    """Re-estimate every BatchNorm's running statistics on the same ``num_batches`` training
    batches (a cumulative average, not a moving one), as SPOS does before scoring a path."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for idx in batches(len(x), batch_size, torch.Generator().manual_seed(seed))[:num_batches]:
        model(x[idx.to(x.device)])
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


def inherit(supernet: Supernet, arch: Arch, x_train: torch.Tensor, x_val: torch.Tensor,
            y_val: torch.Tensor, seed: int = 0) -> tuple[float, float]:
    """(val loss, val accuracy) of ``arch`` with the supernet's weights, after recalibrating
    BatchNorm on its path."""
    supernet.use(arch)
    recalibrate(supernet, x_train, BN_BATCHES, SUPERNET_HP["batch_size"], seed)
    return evaluate(supernet, x_val, y_val)


class SupernetTraining:
    """A supernet, its optimizer and path sampler, trained epoch by epoch.

    ``fair``: each step trains FairNAS's fair paths (``fair_paths``, their gradients summed)
    instead of one. ``fixed``: flat decisions every sampled path takes (a few-shot
    sub-supernet: Zhao et al., ICML 2021, split the supernet on one edge's op; ``restrict``)."""

    def __init__(self, space: Space, input_shape: tuple[int, ...], num_classes: int,
                 controller: Callable[..., Any] | None, epochs: int, device: torch.device,
                 seed: int, fair: bool = False) -> None:
        torch.manual_seed(seed)
        self.space = space
        self.supernet = Supernet(space, input_shape, num_classes, seed).to(device)
        self.opt = torch.optim.SGD(self.supernet.weights(), lr=SUPERNET_HP["lr"], nesterov=True,
                                   momentum=SUPERNET_HP["momentum"],
                                   weight_decay=SUPERNET_HP["weight_decay"])
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=max(1, epochs))
        self.rng = random.Random(seed)
        self.generator = torch.Generator().manual_seed(seed)
        # ENAS: a searcher (``controller(seed=...)``, made by the strategy layer) that learns by
        # REINFORCE which paths to train; SPOS (None): uniform random paths.
        self.controller = controller(seed=seed) if controller else None
        self.fair = fair
        self.fixed: dict[str, Any] = {}
        self.epoch = 0

    def restrict(self, fixed: dict[str, Any], epochs: int) -> None:
        """From now on sample only paths with ``fixed`` (flat decisions), for ``epochs`` more
        epochs on a fresh cosine schedule from the recipe's learning rate."""
        self.fixed = fixed
        for group in self.opt.param_groups:
            group["lr"] = group["initial_lr"] = SUPERNET_HP["lr"]
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=max(1, epochs))

    def sample(self) -> Arch:
        if self.controller:
            return self.controller.propose()
        arch = self.space.sample(self.rng)
        return self.space.decode({**self.space.encode(arch), **self.fixed}) if self.fixed else arch

    def paths(self) -> list[Arch]:
        """The paths one step trains."""
        return fair_paths(self.space, self.rng, self.fixed) if self.fair else [self.sample()]

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor,
                    y_val: torch.Tensor) -> float:
        """One epoch of weight updates, a path per batch; then (ENAS) the controller's turn:
        it samples paths, each rewarded by its accuracy on a validation batch."""
        self.supernet.train()
        total, seen = 0.0, 0
        for idx in batches(len(x), SUPERNET_HP["batch_size"], self.generator):
            idx = idx.to(x.device)
            self.opt.zero_grad(set_to_none=True)
            for path in self.paths():
                self.supernet.use(path)
                loss = nn.functional.cross_entropy(self.supernet(x[idx]), y[idx])
                loss.backward()
                total += loss.item() * len(idx)
                seen += len(idx)
            nn.utils.clip_grad_norm_(self.supernet.weights(), 5.0)
            self.opt.step()
        if self.controller:
            val_batches = batches(len(x_val), SUPERNET_HP["batch_size"], self.generator)
            for step in range(CONTROLLER_STEPS):
                trial_id = f"{self.epoch}-{step}"
                arch = self.space.decode(self.controller.suggest(trial_id))
                idx = val_batches[step % len(val_batches)].to(x.device)
                with torch.no_grad():  # batch statistics: scores need no recalibration
                    out = self.supernet.use(arch)(x_val[idx])
                reward = (out.argmax(1) == y_val[idx]).float().mean().item()
                self.controller.on_trial_complete(trial_id, {"reward": reward})
        self.sched.step()
        self.epoch += 1
        return total / seen

    def state(self) -> dict[str, Any]:
        return {"supernet": self.supernet.state_dict(), "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(), "epoch": self.epoch, "rng": self.rng.getstate(),
                "generator": self.generator.get_state(),
                "controller": self.controller.get_state() if self.controller else None}

    def load(self, state: dict[str, Any]) -> None:
        self.supernet.load_state_dict(state["supernet"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.rng.setstate(state["rng"])
        self.generator.set_state(state["generator"])
        self.epoch = state["epoch"]
        if self.controller:
            self.controller.set_state(state["controller"])


def probe_archs(space: Space, seed: int) -> list[Arch]:
    """Fixed sampled paths whose mean inherited accuracy tracks the supernet's training."""
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(PROBES)]


def supernet_trial(config: dict[str, Any], *, space: Space, data: Dataset,
                   settings: TrialSettings, controller: Callable[..., Any] | None) -> None:
    """Stage 1, a Tune function trainable: train the supernet for ``settings.max_epochs``,
    reporting and checkpointing every epoch (a retried trial resumes from its last epoch)."""
    torch.set_num_threads(max(1, int(settings.cpus)))
    device = device_for(settings.gpus)
    training = SupernetTraining(space, data.input_shape, data.num_classes, controller,
                                settings.max_epochs, device, settings.seed)
    if checkpoint := tune.get_checkpoint():
        with checkpoint.as_directory() as folder:
            training.load(torch.load(Path(folder) / "state.pt", map_location=device,
                                     weights_only=False))
    x, y, x_val, y_val = tensors(device, data.x_train, data.y_train, data.x_val, data.y_val)
    probes = probe_archs(space, settings.seed)
    while training.epoch < settings.max_epochs:
        train_loss = training.train_epoch(x, y, x_val, y_val)
        accuracy = statistics.fmean(inherit(training.supernet, a, x, x_val, y_val,
                                            settings.seed)[1] for a in probes)
        with tempfile.TemporaryDirectory() as folder:
            torch.save(training.state(), Path(folder) / "state.pt")
            tune.report({"train_loss": train_loss, "val_accuracy": accuracy,
                         "epoch": training.epoch, TIME_ATTR: training.epoch},
                        checkpoint=tune.Checkpoint.from_directory(folder))


_LOADED: dict[tuple[str, str], tuple[Supernet, list[torch.Tensor]]] = {}


def _supernet(checkpoint: Any, space: Space, data: Dataset, device: torch.device
              ) -> tuple[Supernet, list[torch.Tensor]]:
    """The trained supernet and the data tensors, loaded once per worker process (Tune reuses
    the actor for the next candidate, so only the first candidate pays for it)."""
    key = (checkpoint.path, str(device))
    if key not in _LOADED:
        supernet = Supernet(space, data.input_shape, data.num_classes).to(device)
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / "state.pt", map_location=device,
                               weights_only=False)
        supernet.load_state_dict(state["supernet"])
        _LOADED.clear()
        _LOADED[key] = supernet, tensors(device, data.x_train, data.x_val, data.y_val)
    return _LOADED[key]


def candidate_trial(config: dict[str, Any], *, space: Space, data: Dataset,
                    settings: TrialSettings, checkpoint: Any) -> None:
    """Stage 2, a Tune function trainable: score one architecture with inherited weights. It
    reports once, at the full budget (nothing is trained, so there is nothing to stop early)."""
    torch.set_num_threads(max(1, int(settings.cpus)))
    arch = space.decode(config)
    supernet, (x_train, x_val, y_val) = _supernet(checkpoint, space, data,
                                                  device_for(settings.gpus))
    val_loss, val_accuracy = inherit(supernet, arch, x_train, x_val, y_val, settings.seed)
    model = build_model(space, arch, data.input_shape, data.num_classes)
    tune.report({"val_accuracy": val_accuracy, "val_loss": val_loss,
                 "params": count_params(model), "flops": count_flops(model, data.input_shape),
                 "arch_hash": arch_hash(arch), "epoch": settings.max_epochs,
                 TIME_ATTR: settings.fidelity.max_budget})


class SupernetTracker(Callback):
    """Mirrors the stage-1 trial into the search's ``supernet`` child run, with progress
    lines (driver side, through the search's ledger like every MLflow write). A supernet trained
    another way (an application's) reports other ``metrics`` with its own ``line`` and
    ``params``.
    """

    def __init__(self, record: SearchRecord, max_epochs: int, progress: Callable[[str], None],
                 metrics: tuple[str, ...] = ("train_loss", "val_accuracy"),
                 line: Callable[[dict], str] | None = None,
                 params: dict[str, Any] | None = None) -> None:
        self.record, self.max_epochs, self.progress = record, max_epochs, progress
        self.metrics, self.line = metrics, line
        self.params = SUPERNET_HP if params is None else params

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.record.child(STAGE, STAGE, {"raynas.role": STAGE, "raynas.trial_id": trial.trial_id})
        self.record.log_params(STAGE, {**trial.config, **self.params, "epochs": self.max_epochs})

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        if result["epoch"] > self.record.ledger.last_step.get(STAGE, 0):
            self.record.log_metrics(STAGE, {k: result[k] for k in self.metrics if k in result},
                                    result["epoch"])
        if self.line:
            self.progress(self.line(result))
            return
        self.progress(f"supernet epoch {result['epoch']}/{self.max_epochs}: train_loss "
                      f"{result['train_loss']:.4f}, val_accuracy {result['val_accuracy']:.4f} "
                      f"(mean of {PROBES} sampled paths, inherited weights)")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.record.end(STAGE)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.record.tag(STAGE, {"raynas.error": trial_error(trial)[:5000]})
        self.record.end(STAGE, "FAILED")


def fit_stage(trainable: Any, path: str, param_space: dict[str, Any], tracker: Callback,
              announce: Callable[[], None]) -> Any:
    """Train a supernet as the one trial of a Tune experiment at ``path`` (checkpointed each
    epoch, retried twice) and return its ``Result``; an experiment that is there already is
    restored and finished, not started again (``announce`` is called only for a new one)."""
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    else:
        announce()
        base, _, name = path.rpartition("/")
        tuner = tune.Tuner(trainable, param_space=param_space,
                           tune_config=tune.TuneConfig(num_samples=1),
                           run_config=tune.RunConfig(
                               name=name, storage_path=base, verbose=0, callbacks=[tracker],
                               checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                               failure_config=tune.FailureConfig(max_failures=2)))
    return tuner.fit()[0]


def train_stage_one(space: Space, data: Dataset, settings: TrialSettings, sampler: str,
                    controller: Callable[..., Any] | None, record: SearchRecord, tune_path: str,
                    progress: Callable[[str], None]) -> Any:
    """Run stage 1 as a Tune experiment under the search's (``<search>/supernet``) and return
    its checkpoint. A finished or interrupted stage is restored, not run again (--resume)."""
    trainable = tune.with_resources(
        tune.with_parameters(supernet_trial, space=space, data=data, settings=settings,
                             controller=controller),
        {"cpu": settings.cpus, "gpu": settings.gpus})
    result = fit_stage(trainable, f"{tune_path.rstrip('/')}/{STAGE}", {"sampler": sampler},
                       SupernetTracker(record, settings.max_epochs, progress),
                       lambda: progress(f"stage 1: training the supernet ({sampler}, "
                                        f"{settings.max_epochs} epochs)"))
    if result.error or result.checkpoint is None:
        raise RaynasError(f"supernet training failed: {last_line(str(result.error))}")
    record.tag("parent", {"raynas.supernet_checkpoint": result.checkpoint.path})
    progress(f"stage 2: scoring candidates with the supernet's weights "
             f"({result.checkpoint.path})")
    return result.checkpoint


@dataclass(frozen=True)
class OneShot:
    """The estimator of ``--strategy oneshot`` (see ``Plan.estimator``): stage 1 before the
    search, candidates scored against its checkpoint, the best one's config is its arch."""

    sampler: str = "spos"
    controller: Callable[..., Any] | None = None  # ENAS: see ``SupernetTraining``

    def trainable(self, space: Space, data: Dataset, settings: TrialSettings, record: Any,
                  tune_path: str, progress: Callable[[str], None]) -> Any:
        checkpoint = train_stage_one(space, data, settings, self.sampler, self.controller,
                                     record, tune_path, progress)
        return tune.with_parameters(candidate_trial, space=space, data=data, settings=settings,
                                    checkpoint=checkpoint)

    tracker = MLflowTracker

    def arch(self, space: Space, result: Any) -> Arch:
        return space.decode(result.config)
