"""DARTS (Liu et al., ICLR 2019): differentiable architecture search as a Tune trainable.

One trial is one DARTS run: the supernet's weights w are trained on the training split and the
architecture parameters alpha on the validation split, alternating per batch (the bilevel
problem). First order treats w as fixed when stepping alpha; second order differentiates
through the step the weight optimizer is about to take (momentum and weight decay included),
with an exact Hessian-vector product. Each epoch derives the discrete genotype from alpha and
reports it; Tune sweeps DARTS's own hyperparameters (arch lr, weight lr, order, seed) across
trials, and the best trial's genotype is retrained from scratch like the winner of any search.

Against the known collapse to parameter-free skip connections (Zela et al. 2020) a trial stops
early, DARTS+-style (Liang et al. 2019), once the genotype holds more than ``max_skip`` of them,
and keeps the last genotype that did not. Written here because no maintained library offers
DARTS over these cells as a Tune trainable (NNI's DARTS strategy is archived with retiarii).
"""

from __future__ import annotations

import io
import json
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from ray import tune
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from raynas.data import Dataset
from raynas.estimation.fidelity import TIME_ATTR
from raynas.estimation.oneshot import batches
from raynas.estimation.problem import Loss, problem_of
from raynas.estimation.train import TrialSettings, device_for, tensors
from raynas.models import build_model, describe
from raynas.models.supernet import Supernet, skip_count
from raynas.objectives.measure import count_flops, count_params
from raynas.space import Arch, Space, arch_hash
from raynas.tracking.tracker import MLflowTracker

#: What Tune sweeps across DARTS runs (``--num-trials`` of them); constants are not swept.
SWEEP: dict[str, list[Any] | Any] = {
    "arch_lr": [1e-3, 3e-3, 1e-2],  # Adam on alpha (DARTS: 3e-4 for 50 CIFAR epochs)
    "weight_lr": [0.025, 0.05, 0.1],  # SGD on w, cosine-annealed (DARTS: 0.025)
    "order": [1, 2],
    "seed": [0, 1, 2, 3],
    "max_skip": 2,  # collapse guard: more skip connections than this in the cell ends a run
}
DEFAULT_TRIALS = 4
BATCH_SIZE = 64
WEIGHT_DECAY = 3e-4
ARCH_WEIGHT_DECAY = 1e-3
GRAD_CLIP = 5.0
ALPHA = "alpha"  # reported metrics alpha/<cell>/<edge>/<op> = softmax(alpha)


def param_space() -> dict[str, Any]:
    return {k: tune.choice(v) if isinstance(v, list) else v for k, v in SWEEP.items()}


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
          params: dict[str, torch.Tensor] | None = None,
          criterion: Loss = nn.functional.cross_entropy) -> torch.Tensor:
    out = model(x) if params is None else functional_call(model, params, (x,))
    return criterion(out, y)


class DartsSearch:
    """A supernet with its two optimizers: SGD on the weights, Adam on alpha; the loss is the
    space's problem's (cross-entropy, or Dice + cross-entropy for a U-Net)."""

    def __init__(self, space: Space, input_shape: tuple[int, ...], num_classes: int,
                 config: dict[str, Any], epochs: int, device: torch.device) -> None:
        torch.manual_seed(config["seed"])
        self.problem = problem_of(space)
        self.criterion = self.problem.loss()
        self.batch_size = min(BATCH_SIZE, self.problem.max_batch or BATCH_SIZE)
        self.supernet = Supernet(space, input_shape, num_classes, config["seed"]).to(device)
        self.supernet.use(None)
        self.order = int(config["order"])
        self.w_opt = torch.optim.SGD(self.supernet.weights(), lr=config["weight_lr"],
                                     momentum=0.9, weight_decay=WEIGHT_DECAY)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, max(1, epochs),
                                                                eta_min=1e-3)
        self.a_opt = torch.optim.Adam(self.supernet.alpha.values(), lr=config["arch_lr"],
                                      betas=(0.5, 0.999), weight_decay=ARCH_WEIGHT_DECAY)
        self.generator = torch.Generator().manual_seed(config["seed"])
        self.epoch = 0

    def _loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return _loss(model, x, y, params, self.criterion)

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor,
                    y_val: torch.Tensor) -> float:
        """Alternate an alpha step on a validation batch and a w step on a training batch."""
        self.supernet.train()
        val_batches = batches(len(x_val), self.batch_size, self.generator)
        total, seen = 0.0, 0
        for step, idx in enumerate(batches(len(x), self.batch_size, self.generator)):
            idx, vidx = idx.to(x.device), val_batches[step % len(val_batches)].to(x.device)
            self.a_opt.zero_grad(set_to_none=True)
            if self.order == 2:
                self._unrolled_grad(x[idx], y[idx], x_val[vidx], y_val[vidx])
            else:
                self._loss(self.supernet, x_val[vidx], y_val[vidx]).backward(
                    inputs=list(self.supernet.alpha.values()))
            self.a_opt.step()
            self.w_opt.zero_grad(set_to_none=True)
            loss = self._loss(self.supernet, x[idx], y[idx])
            loss.backward(inputs=self.supernet.weights())
            nn.utils.clip_grad_norm_(self.supernet.weights(), GRAD_CLIP)
            self.w_opt.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        self.sched.step()
        self.epoch += 1
        return total / seen

    def _unrolled_grad(self, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor,
                       y_val: torch.Tensor) -> None:
        """Second order (DARTS eq. 6-8): set alpha.grad to the total derivative
        d/dalpha L_val(w'(alpha), alpha), where w' is the step ``w_opt`` is about to take on this
        training batch (``_virtual_step``: momentum buffer and weight decay included). By the
        chain rule that is grad_alpha L_val(w', alpha) - xi H v, with xi the current weight lr,
        v = grad_w' L_val(w', alpha) and H the mixed second derivative d^2 L_train / dalpha dw
        (times the clipping factor, and its derivative, when the gradient is clipped).

        H v is exact, by double backward: the virtual step keeps its graph (``create_graph``)
        and one backward of L_val runs through it. Why not DARTS's central differences: at its
        eps = 0.01 / |v| they were off by 0.5-1.1 times the whole hypergradient on a tiny
        supernet, even in float64 (a step that size crosses ReLU kinks, where grad_alpha
        L_train jumps, so a smaller eps did not help until 1e-5 / |v|, which float32 rounding
        swamps), while the exact product costs about the same: one training forward and a
        double backward instead of three training forward-backward passes. A second-order
        epoch took 1.05x the time of the finite-difference one on a 4-channel NAS-Bench-201
        supernet, 1.05-1.2x on a 3-cell DARTS one; the price is memory, the training graph is
        kept for the double backward."""
        alphas = list(self.supernet.alpha.values())
        # Attention ops: of scaled_dot_product_attention's kernels only the math one can be
        # differentiated twice (the CPU flash kernel's backward has no derivative).
        with sdpa_kernel(SDPBackend.MATH):
            unrolled = self._virtual_step(x, y)
            grads = torch.autograd.grad(self._loss(self.supernet, x_val, y_val, unrolled),
                                        alphas)
        for a, g in zip(alphas, grads, strict=True):
            a.grad = g

    def _virtual_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weights after the step ``train_epoch`` takes on the batch (x, y), as a
        differentiable function of alpha: the gradient clipped to norm ``GRAD_CLIP`` as
        ``clip_grad_norm_`` does, then ``torch.optim.SGD``'s update with this optimizer's
        lr, weight decay, momentum buffer, dampening and nesterov, so that
        w' = w - lr (mu m + clip(g) + lambda w) once a buffer m exists (the DARTS reference's
        unrolled step, with momentum and weight decay), w - lr (clip(g) + lambda w) before,
        with g = grad_w L_train(w, alpha) kept differentiable in alpha. Nothing is changed:
        the real step still makes the step and updates the buffer."""
        named = [(n, w) for n, w in self.supernet.named_parameters()
                 if not n.startswith("alpha.")]
        group = self.w_opt.param_groups[0]
        lr, decay, mu = group["lr"], group["weight_decay"], group["momentum"]
        grads = torch.autograd.grad(self._loss(self.supernet, x, y), [w for _, w in named],
                                    create_graph=True, allow_unused=True)
        norm = torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads if g is not None]))
        clip = torch.clamp(GRAD_CLIP / (norm + 1e-6), max=1.0)
        unrolled = {}
        for (name, w), g in zip(named, grads, strict=True):
            if g is None:  # SGD leaves a weight without a gradient alone
                unrolled[name] = w
                continue
            d = clip * g + decay * w
            if mu:
                buf = self.w_opt.state.get(w, {}).get("momentum_buffer")
                buf = d if buf is None else mu * buf + (1 - group["dampening"]) * d
                d = d + mu * buf if group["nesterov"] else buf
            unrolled[name] = w - lr * d
        return unrolled

    def state(self) -> dict[str, Any]:
        return {"supernet": self.supernet.state_dict(), "w_opt": self.w_opt.state_dict(),
                "a_opt": self.a_opt.state_dict(), "sched": self.sched.state_dict(),
                "generator": self.generator.get_state(), "epoch": self.epoch}

    def load(self, state: dict[str, Any]) -> None:
        self.supernet.load_state_dict(state["supernet"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.sched.load_state_dict(state["sched"])
        self.generator.set_state(state["generator"])
        self.epoch = state["epoch"]


def alpha_metrics(supernet: Supernet) -> dict[str, float]:
    """softmax(alpha) as flat metrics ``alpha/<cell>/<edge J_I>/<op>``."""
    return {f"{ALPHA}/{kind}/{edge}/{op}": w
            for kind, edges in supernet.alpha_table().items()
            for edge, ops in edges.items() for op, w in ops.items()}


def darts_trial(config: dict[str, Any], *, space: Space, data: Dataset,
                settings: TrialSettings) -> None:
    """The Tune function trainable: one DARTS run of ``settings.max_epochs`` epochs, reporting
    (and checkpointing) alpha, the derived genotype and the supernet's validation accuracy
    every epoch. ``arch`` in the result is the genotype this run stands for."""
    torch.set_num_threads(max(1, int(settings.cpus)))
    device = device_for(settings.gpus)
    run = DartsSearch(space, data.input_shape, data.num_classes, config, settings.max_epochs,
                      device)
    kept: Arch | None = None  # the last derived genotype within the skip limit
    if checkpoint := tune.get_checkpoint():
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / "state.pt", map_location=device,
                               weights_only=False)
        run.load(state["run"])
        kept = state["kept"]
    x, y, x_val, y_val = tensors(device, data.x_train, data.y_train, data.x_val, data.y_val)
    while run.epoch < settings.max_epochs:
        train_loss = run.train_epoch(x, y, x_val, y_val)
        scores = run.problem.evaluate(run.supernet, x_val, y_val, data.num_classes,
                                      run.criterion)
        derived = run.supernet.derive()
        skips = skip_count(derived, space)
        collapsed = skips > config["max_skip"] and kept is not None
        kept = kept if collapsed else derived
        model = build_model(space, kept, data.input_shape, data.num_classes)
        metrics = {"train_loss": train_loss, **{f"val_{k}": v for k, v in scores.items()},
                   "epoch": run.epoch, TIME_ATTR: run.epoch, "skip_count": skips,
                   "collapsed": int(collapsed), "arch": json.dumps(kept),
                   "arch_hash": arch_hash(kept), "genotype": describe(space, kept),
                   "params": count_params(model), "flops": count_flops(model, data.input_shape),
                   **alpha_metrics(run.supernet)}
        with tempfile.TemporaryDirectory() as folder:
            torch.save({"run": run.state(), "kept": kept}, Path(folder) / "state.pt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        if collapsed:
            return


def heatmap(alphas: dict[str, float], title: str) -> bytes:
    """A PNG of softmax(alpha) from ``alpha/...`` metrics: one panel per cell type, edges as
    rows, ops as columns."""
    tables: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for key, value in alphas.items():
        _, kind, edge, op = key.split("/")
        tables[kind][edge][op] = value
    fig = Figure(figsize=(4.5 * len(tables), 5), layout="constrained")
    for ax, (kind, edges) in zip(fig.subplots(1, len(tables), squeeze=False)[0], tables.items(),
                                 strict=True):
        ops = list(next(iter(edges.values())))
        image = ax.imshow([[edges[e][op] for op in ops] for e in edges], cmap="viridis",
                          aspect="auto")
        ax.set_xticks(range(len(ops)), ops, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(edges)), list(edges), fontsize=7)
        ax.set_ylabel("edge J_I: into node J from node I")
        ax.set_title(f"{kind} cell", fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(title, fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


class DartsTracker(MLflowTracker):
    """The tracker for DARTS runs: a trial's params are its DARTS hyperparameters; per epoch it
    logs alpha (metrics and a heat-map PNG); at the end the derived genotype
    (``architecture.json``, tags ``raynas.genotype`` and ``raynas.arch_hash``)."""

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        key = f"trial/{trial.trial_id}"
        self.ledger.seen.add(key)
        self.ledger.live.add(key)
        if self.ledger.has(key):  # a retried or resumed trial keeps its run
            return
        self.record.child(key, f"trial-{trial.trial_id}", {
            "raynas.trial_id": trial.trial_id, "raynas.role": "trial"})
        self.record.log_params(key, {f"darts.{k}": v for k, v in trial.config.items()})

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        key = f"trial/{trial.trial_id}"
        step = int(result.get(TIME_ATTR, 0))
        new = step > self.ledger.last_step.get(key, 0)  # not logged before a retry or resume
        super().on_trial_result(iteration, trials, trial, result, **info)
        if new:
            alphas = {k: v for k, v in result.items() if k.startswith(f"{ALPHA}/")}
            self.record.log_metrics(key, {**alphas, "skip_count": result["skip_count"]}, step)
            name = f"{ALPHA}/{trial.trial_id}/alpha_epoch{step:03d}.png"
            self.record.log_file(key, name, heatmap(alphas, f"trial {trial.trial_id}, epoch "
                                                            f"{step}: softmax(alpha)"))
        if result.get("collapsed"):
            self.progress(f"trial {trial.trial_id}: {result['skip_count']} skip connections "
                          "(collapse); stopped, keeping the previous genotype")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        key = f"trial/{trial.trial_id}"
        result = trial.last_result or {}
        if "arch" in result:
            self.record.log_dict(key, json.loads(result["arch"]), "architecture.json")
            self.record.tag(key, {"raynas.genotype": result["genotype"],
                                  "raynas.arch_hash": result["arch_hash"],
                                  "raynas.collapsed": bool(result.get("collapsed"))})
        super().on_trial_complete(iteration, trials, trial, **info)


@dataclass(frozen=True)
class Darts:
    """The estimator of ``--strategy darts`` (see ``Plan.estimator``)."""

    tracker = DartsTracker

    def trainable(self, space: Space, data: Dataset, settings: TrialSettings, record: Any,
                  tune_path: str, progress: Any) -> Any:
        return tune.with_parameters(darts_trial, space=space, data=data, settings=settings)

    def arch(self, space: Space, result: Any) -> Arch:
        return space.validate(json.loads(result.metrics["arch"]))
