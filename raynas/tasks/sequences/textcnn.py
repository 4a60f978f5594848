"""The ``text_cnn`` model: Kim 2014's CNN for sentence classification over token ids, the
hand-designed baseline of the text benchmark (``raynas bench sequences``), trained by the same
loop as a searched network. Fields: ``embed_dim``, ``filters`` (per width), the widths from
``width_min`` to ``width_max``, ``dropout``, ``vocab`` (ids past it are hashed in, as the
transformer's ``tokens`` stem does).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from raynas.errors import SpaceError
from raynas.models.macro import padding
from raynas.space.space import Space

FIELDS = ("embed_dim", "filters", "width_min", "width_max", "dropout", "vocab", "train")


class TextCNN(nn.Module):
    def __init__(self, arch: dict[str, Any], input_shape: tuple[int, ...],
                 num_classes: int) -> None:
        super().__init__()
        if len(input_shape) != 2 or input_shape[0] != 1:
            raise SpaceError(f"text_cnn model: inputs must be token ids (1, L), got "
                             f"{input_shape}")
        self.vocab = arch["vocab"]
        self.embed = nn.Embedding(self.vocab, arch["embed_dim"])
        widths = range(arch["width_min"], arch["width_max"] + 1)
        self.convs = nn.ModuleList(nn.Conv1d(arch["embed_dim"], arch["filters"], w,
                                             padding=w // 2) for w in widths)
        self.drop = nn.Dropout(arch["dropout"])
        self.out = nn.Linear(arch["filters"] * len(widths), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, pad = padding(x)
        e = self.embed(x[:, 0].long().remainder(self.vocab)).transpose(1, 2)
        e = e.masked_fill(pad[:, None], 0.0)
        length = e.shape[2]
        pooled = [torch.relu(conv(e))[..., :length].masked_fill(pad[:, None], float("-inf"))
                  .amax(2) for conv in self.convs]  # max over the real tokens
        return self.out(self.drop(torch.cat(pooled, 1)))


def build(arch: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return TextCNN(arch, input_shape, num_classes)


def check(space: Space, origin: str) -> None:
    """A fixed network: every field a constant (only ``train`` may be searched)."""
    for name, _ in space.root.fields:
        if name not in FIELDS:
            raise SpaceError(f"{origin}: space.{name}: unknown field; known: {', '.join(FIELDS)}")
    for name in FIELDS[:-1]:
        if space.domain(name) is None:
            raise SpaceError(f"{origin}: space.{name}: missing")
