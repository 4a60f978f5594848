"""The elastic transformer: every sub-transformer of a ``transformer`` space in one set of
weights, for Once-for-All's ``raynas ofa train`` and ``raynas specialize`` (``raynas.ofa``).

AutoFormer's weight entanglement (Chen et al., "AutoFormer: Searching Transformers for Visual
Recognition", ICCV 2021): the supernet is the largest transformer of the space (largest
embedding dim, depth and MLP ratio) and a sub-transformer uses the leading slices of its weights:
the first ``embed_dim`` channels of every tensor, the first ``round(embed_dim * mlp_ratio)``
hidden units of each MLP, the first ``depth`` layers; the queries, keys and values are sliced
each on its own; the number of heads splits the same weights differently.

The supernet runs a sub-transformer as the stand-alone ``TransformerNet`` of that architecture
(built by ``use(arch)`` on the ``meta`` device, so it holds no memory) with the sliced
weights put in by ``torch.func.functional_call``: what it computes is by construction what
``extract`` returns, which holds copies of the same slices.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from raynas.errors import ConfigError, SpaceError
from raynas.space import Arch, Space
from raynas.tasks.sequences.model import TransformerNet

#: Fields every sub-transformer shares: the supernet has one stem, encoding and head.
SHARED = ("stem", "patch_size", "positional", "pooling", "dropout", "vocab")
QKV = ".attention.qkv."


class Choices:
    """The elastic dimensions of a ``transformer`` space: ``embed_dim``, ``depth`` (the number
    of layers), and per layer ``heads`` and ``mlp_ratio``; ``arch(pick)`` composes one."""

    def __init__(self, space: Space) -> None:
        if space.model != "transformer":
            raise ConfigError(f"--space {space.name}: the elastic transformer needs a "
                              f"transformer space, not model {space.model!r}")
        for field in SHARED:
            values = space.values(field) if space.domain(field) is not None else [None]
            if len(values) != 1:
                raise SpaceError(f"{space.name}: space.{field}: must be a constant for the "
                                 "elastic transformer (every sub-transformer shares it)")
        layers = space.domain("layers")
        self.space = space
        self.template = space.sample(random.Random(0))
        self.dims = {"embed_dim": sorted(space.values("embed_dim")),
                     "depth": list(range(layers.min, layers.max + 1)),
                     "heads": sorted(space.values("layers.heads")),
                     "mlp_ratio": sorted(space.values("layers.mlp_ratio"))}

    def arch(self, pick: Any) -> Arch:
        """An architecture whose every elastic value is ``pick(options, what)``, ``what`` one
        of ``embed_dim``, ``depth``, ``heads``, ``mlp_ratio`` (e.g. ``max``, or a sampler)."""
        layers = [{"heads": pick(self.dims["heads"], "heads"),
                   "mlp_ratio": pick(self.dims["mlp_ratio"], "mlp_ratio")}
                  for _ in range(pick(self.dims["depth"], "depth"))]
        return self.space.validate({**self.template, "layers": layers,
                                    "embed_dim": pick(self.dims["embed_dim"], "embed_dim")})

    def largest(self) -> Arch:
        return self.arch(lambda options, what: max(options))

    def smallest(self) -> Arch:
        return self.arch(lambda options, what: min(options))


def leading(tensor: torch.Tensor, shape: torch.Size, key: str) -> torch.Tensor:
    """The leading slice of ``tensor`` of ``shape``; the stacked queries, keys and values of an
    attention's input projection are sliced one by one."""
    if QKV in key:
        full = tensor.shape[0] // 3
        return tensor.reshape(3, full, *tensor.shape[1:])[
            (slice(None), *(slice(0, n) for n in (shape[0] // 3, *shape[1:])))
        ].reshape(shape)
    return tensor[tuple(slice(0, n) for n in shape)]


class ElasticTransformer(nn.Module):
    """Every architecture of a ``transformer`` space (its shared fields constant) in one
    network, the largest; ``use(arch)`` sets the active sub-transformer."""

    #: Progressive shrinking's phases (``raynas.ofa.shrinking``) and what each samples: the
    #: heads and MLP ratios first (they change the least), then the depth, then the width.
    PHASES = {"full": (), "mlp": ("heads", "mlp_ratio"), "depth": ("heads", "mlp_ratio", "depth"),
              "width": ("heads", "mlp_ratio", "depth", "embed_dim")}
    ALWAYS: tuple[str, ...] = ()
    #: Adam's rates: at 3e-3 (the ``ofa`` supernet's first) the largest transformer's training
    #: loss on GunPoint stayed at 0.66 (2 classes) for all 40 epochs of ``full``; 1e-3 trains it.
    LR = {"full": 1e-3, "shrinking": 1e-3}

    def __init__(self, space: Space, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.choices = Choices(space)
        self.space, self.input_shape, self.num_classes = space, input_shape, num_classes
        self.full = TransformerNet(self.choices.largest(), input_shape, num_classes)
        self.use(self.choices.largest())

    def use(self, arch: Arch) -> ElasticTransformer:
        """Run ``arch`` from now on."""
        self.arch = self.space.validate(arch)
        with torch.device("meta"):
            # kept out of the module tree: it has no weights of its own
            self.__dict__["active"] = TransformerNet(self.arch, self.input_shape,
                                                     self.num_classes)
        return self

    def start_phase(self, phase: str) -> None:
        """Nothing to prepare: AutoFormer's entanglement needs no reordering."""

    def weights(self) -> dict[str, torch.Tensor]:
        """The active sub-transformer's parameters and buffers: leading slices of the largest
        one's, by the stand-alone network's names; views (a BatchNorm's running statistics are
        updated in place), but for the stacked queries, keys and values: a copy, through
        which the gradients flow back all the same."""
        full = self.full.state_dict(keep_vars=True)
        return {key: leading(full[key], tensor.shape, key)
                for key, tensor in self.active.state_dict(keep_vars=True).items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.active.train(self.training)
        for mine, full in zip(self.norms(self.active), self.norms(self.full), strict=True):
            mine.momentum = full.momentum  # a recalibration sets the supernet's
        return functional_call(self.active, self.weights(), (x,))

    @staticmethod
    def norms(net: nn.Module) -> list[nn.Module]:
        return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    @torch.no_grad()
    def extract(self, arch: Arch) -> TransformerNet:
        """``arch`` as a stand-alone network with the supernet's weights: in eval mode it
        computes what the supernet computes with ``use(arch)``."""
        self.use(arch)
        net = TransformerNet(self.arch, self.input_shape, self.num_classes)
        net.load_state_dict({k: v.detach().clone() for k, v in self.weights().items()})
        return net.to(next(self.full.parameters()).device)
