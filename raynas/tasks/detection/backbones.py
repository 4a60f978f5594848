"""torchvision classification networks as a detector's backbone (``backbone: resnet18``), trained
from scratch or started from a weights file the user has (``--backbone-weights PATH``, the
space's ``backbone_weights``): nothing is downloaded.

torchvision's ``resnet_fpn_backbone`` and ``mobilenet_backbone`` fix the neck (an FPN) and the
stages it sees; here the network's body gives every block's output, as the macro chain does, so
the searched neck (none, FPN, BiFPN) and ``levels`` pick its scales the same way. With weights,
its BatchNorm is frozen (torchvision's ``FrozenBatchNorm2d``, as its detectors freeze a trained
backbone's: batches of a few images would spoil the statistics) and ``trainable_stages`` says
how many of its five resolution stages, the deepest, train (torchvision's
``trainable_backbone_layers``); from scratch, all of it trains (random weights are not worth
keeping).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from raynas.errors import SpaceError

BACKBONES = ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_small",
             "mobilenet_v3_large")
#: Resolution stages of each of them (strides 2 to 32): what ``trainable_stages`` counts.
STAGES = 5
#: Keys that training scripts wrap a state dict in.
WRAPPERS = ("state_dict", "model", "model_state_dict")
#: The side of the blank image that measures each block's stride and width.
PROBE = 64


class TorchvisionTrunk(nn.Module):
    """torchvision's ``name`` without its classifier, with the macro chain's interface:
    ``features`` (every block's output, in order), ``channels`` and ``reductions`` (each
    block's width and stride)."""

    def __init__(self, name: str, weights: str | None = None,
                 trainable_stages: int = STAGES) -> None:
        super().__init__()
        self.net = torchvision.models.get_model(
            name, weights=None, norm_layer=FrozenBatchNorm2d if weights else nn.BatchNorm2d)
        resnet = hasattr(self.net, "fc")
        setattr(self.net, "fc" if resnet else "classifier", nn.Identity())
        if weights:
            self.net.load_state_dict(read_weights(weights, name, self.net.state_dict()))
        # The body, in order (the modules stay registered under ``net``, by torchvision's names)
        self.blocks = ([self.net.conv1, self.net.bn1, self.net.relu, self.net.maxpool,
                        self.net.layer1, self.net.layer2, self.net.layer3, self.net.layer4]
                       if resnet else list(self.net.features))
        self.channels, self.reductions = [], []
        training, x = self.net.training, torch.zeros(1, 3, PROBE, PROBE)
        self.net.eval()
        with torch.no_grad():
            for block in self.blocks:
                x = block(x)
                self.channels.append(x.shape[1])
                self.reductions.append(PROBE // x.shape[-1])
        self.net.train(training)
        frozen = sorted(set(self.reductions))[:STAGES - trainable_stages] if weights else []
        for block, reduction in zip(self.blocks, self.reductions, strict=True):
            if reduction in frozen:
                block.requires_grad_(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out


def read_weights(path: str, name: str, expected: dict[str, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` for torchvision's ``name`` (keys and shapes as in
    ``expected``), without its classifier; a one-line SpaceError naming the file and what is
    wrong with it. A checkpoint that wraps it (``state_dict``, ``model``) or a DataParallel
    one (``module.`` keys) is taken too."""
    def fail(message: str) -> SpaceError:
        return SpaceError(f"backbone_weights {path}: {message}")

    file = Path(path)
    if not file.is_file():
        raise fail("no such file")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle error, a zip error, a truncated file...
        raise fail(f"not a PyTorch weights file ({type(exc).__name__}: "
                   f"{str(exc).splitlines()[0][:100] if str(exc) else ''})") from None
    for key in WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise fail("not a state dict (a dict of tensors)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    # The classifier is not used; FrozenBatchNorm2d keeps no batch count.
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))
             and (k in expected or not k.endswith("num_batches_tracked"))}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = [f"{what} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                for what, keys in (("missing", missing), ("unexpected", unexpected),
                                   ("wrong shape:", shapes)) if keys]
    if problems:
        raise fail(f"not torchvision's {name} weights: {'; '.join(problems)}")
    return state
