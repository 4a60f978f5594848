"""Zero-cost proxies: score an architecture at initialisation, from one mini-batch, in a fraction
of a second (Abdelfattah et al. 2021, "Zero-Cost Proxies for Lightweight NAS").

Higher is better for every proxy. Written here because the reference implementations are
research repositories, not maintained packages, and they patch the network in place
(NAS-Bench-201 specifics); these act on any ``nn.Module`` the builders make. Each scores a freshly
built model, so none needs to restore what it changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from raynas.estimation.fidelity import nested_order
from raynas.estimation.train import seed_everything
from raynas.models import build_model
from raynas.objectives.measure import count_params
from raynas.space import Space

MINIBATCH = 64

Proxy = Callable[[nn.Module, torch.Tensor, torch.Tensor], float]


def _weights(model: nn.Module) -> list[torch.Tensor]:
    """The weights of the convolutions and linear layers: what pruning-at-init scores are
    defined on (BatchNorm's affine parameters are not connections)."""
    return [m.weight for m in model.modules()
            if isinstance(m, nn.modules.conv._ConvNd | nn.Linear)]


def _loss_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """Cross-entropy gradients of the weights on the batch (train mode: BatchNorm normalises
    with the batch's statistics, as in the first training step); zeros for unused weights."""
    model.train()
    weights = _weights(model)
    loss = nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, weights, allow_unused=True)
    return [torch.zeros_like(w) if g is None else g for w, g in zip(weights, grads, strict=True)]


def snip(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """SNIP (Lee et al. 2019): total connection sensitivity, sum |w * dL/dw|."""
    grads = _loss_gradients(model, x, y)
    return float(sum((w.detach() * g).abs().sum()
                     for w, g in zip(_weights(model), grads, strict=True)))


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Sum over layers of the Euclidean norm of the loss gradient (Abdelfattah et al. 2021)."""
    return float(sum(g.norm() for g in _loss_gradients(model, x, y)))


def synflow(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """SynFlow (Tanaka et al. 2020): with every parameter replaced by its absolute value and an
    all-ones input, R = sum of the outputs; the score is sum |theta * dR/dtheta|. Data-free.

    In float64, since R is a product of per-layer gains and overflows float32 in deep or wide
    networks; in eval mode, so BatchNorm applies its initial running statistics (the identity)
    instead of normalising away the signal of a one-sample batch of ones.
    """
    model.double().eval()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    params = [p for p in model.parameters() if p.requires_grad]
    output = model(torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device))
    grads = torch.autograd.grad(output.sum(), params, allow_unused=True)
    return float(sum((p.detach() * g).abs().sum() for p, g in zip(params, grads, strict=True)
                     if g is not None))


def naswot(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """NASWOT (Mellor et al. 2021): how differently the ReLUs fire for the inputs of a batch.
    K[i, j] = number of ReLU units on which inputs i and j agree (both active or both not);
    the score is log|K|. Here log|K + I|: a ridge of one unit keeps the score finite for a
    network whose units cannot tell two inputs apart (plain log|K| is -inf there)."""
    kernel = torch.zeros(len(x), len(x), dtype=torch.float64, device=x.device)

    def add(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        codes = (output.detach().flatten(1) > 0).double()
        kernel.add_(codes @ codes.T + (1 - codes) @ (1 - codes).T)

    hooks = [m.register_forward_hook(add) for m in model.modules() if isinstance(m, nn.ReLU)]
    model.train()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    eye = torch.eye(len(x), dtype=torch.float64, device=x.device)
    return float(torch.linalg.slogdet(kernel + eye).logabsdet)


def params(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The parameter count: the baseline every zero-cost proxy has to beat."""
    return float(count_params(model))


PROXIES: dict[str, Proxy] = {"synflow": synflow, "snip": snip, "grad_norm": grad_norm,
                             "naswot": naswot, "params": params}


def minibatch(x: np.ndarray, y: np.ndarray, seed: int,
              size: int = MINIBATCH) -> tuple[np.ndarray, np.ndarray]:
    """The one batch every candidate is scored on: a class-balanced prefix of the training
    set (the same for every candidate, so scores are comparable)."""
    keep = nested_order(y, seed)[:size]
    return x[keep], y[keep]


def score(space: Space, arch: dict[str, Any], proxy: str, x: torch.Tensor, y: torch.Tensor,
          num_classes: int, seed: int = 0) -> float:
    """``proxy`` of ``arch`` at its initialisation (seeded as its training would be); a
    non-finite score is returned as -inf, so it ranks last."""
    seed_everything(seed, arch)
    model = build_model(space, arch, tuple(x.shape[1:]), num_classes).to(x.device)
    value = PROXIES[proxy](model, x, y)
    return value if math.isfinite(value) else -math.inf
