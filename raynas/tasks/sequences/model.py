"""The ``transformer`` model: AutoFormer-style transformers for sequences, text and images.

An architecture: a ``stem`` that makes tokens of ``embed_dim`` channels (``linear``: each step
alone; ``conv``: a 3-wide convolution, the optional conv stem; ``patch``: non-overlapping patches
of ``patch_size``, ViT's, for sequences and images; ``tokens``: an embedding table of ``vocab``
rows for token ids, text), a ``positional`` encoding (``learned``, ``sinusoidal`` or ``none``),
``layers`` of pre-norm encoder blocks each with its own ``heads`` and ``mlp_ratio`` (AutoFormer's
per-layer choices at one embedding dim), ``dropout``, and the ``pooling`` of the tokens into the
classifier's input (``mean`` of the real tokens, or a class token, ``cls``).

Padding is read from the input as in the macro network (``raynas.models.macro``: steps NaN in
every channel; a text's token ids are NaN after its end): attention never attends to padded
tokens and the mean pools the real ones only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from raynas.errors import SpaceError, did_you_mean, show
from raynas.models.macro import masked, padding
from raynas.space.nodes import Group, Repeat
from raynas.space.space import Space
from raynas.tasks.sequences.layers import EncoderBlock, PatchEmbed, Positional, tokens

STEMS = ("linear", "conv", "patch", "tokens")
POSITIONAL = ("learned", "sinusoidal", "none")
POOLING = ("mean", "cls")
#: Rows of the ``tokens`` stem's embedding when the space does not say (the ``text:`` source's
#: tokenizer makes that many; larger ids are hashed into the table).
VOCAB = 8192
DEFAULTS = {"stem": "linear", "patch_size": 1, "positional": "learned", "pooling": "mean",
            "dropout": 0.0, "vocab": VOCAB}
LAYER_FIELDS = ("heads", "mlp_ratio")


class Stem(nn.Module):
    """Inputs (N, C, *spatial) to token features (N, embed_dim, *spatial')."""

    def __init__(self, kind: str, c_in: int, dim: int, patch: int, vocab: int,
                 dims: int) -> None:
        super().__init__()
        self.kind, self.vocab = kind, vocab
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        if kind == "tokens":
            self.embed: nn.Module = nn.Embedding(vocab, dim)
        elif kind == "conv":
            norm = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
            self.embed = nn.Sequential(conv(c_in, dim, 3, padding=1, bias=False), norm(dim),
                                       nn.GELU())
        else:
            self.embed = PatchEmbed(c_in, dim, patch if kind == "patch" else 1, dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "tokens":  # ids (N, 1, L) -> (N, D, L); ids past the table hashed in
            return self.embed(x[:, 0].long().remainder(self.vocab)).transpose(1, 2)
        return self.embed(x)


class TransformerNet(nn.Module):
    def __init__(self, arch: dict[str, Any], input_shape: tuple[int, ...],
                 num_classes: int) -> None:
        super().__init__()
        a = {**DEFAULTS, **arch}
        dims = len(input_shape) - 1
        if dims not in (1, 2):
            raise SpaceError(f"transformer model: inputs must be sequences (C, L) or images "
                             f"(C, H, W), got {input_shape}")
        if a["stem"] == "tokens" and input_shape[0] != 1:
            raise SpaceError(f"transformer model: the tokens stem reads token ids (1, L), got "
                             f"{input_shape}")
        dim, patch = a["embed_dim"], a["patch_size"] if a["stem"] == "patch" else 1
        self.stem = Stem(a["stem"], input_shape[0], dim, patch, a["vocab"], dims)
        size = tuple(-(-s // patch) for s in input_shape[1:])
        self.positional = Positional(a["positional"], dim, size) \
            if a["positional"] != "none" else None
        self.cls = nn.Parameter(torch.zeros(1, 1, dim)) if a["pooling"] == "cls" else None
        self.blocks = nn.ModuleList(EncoderBlock(dim, layer["heads"], layer["mlp_ratio"],
                                                 a["dropout"]) for layer in a["layers"])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Sequential(nn.Dropout(a["dropout"]), nn.Linear(dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, pad = padding(x)
        y, pad = masked(self.stem(x), pad)
        if self.positional is not None:
            y = self.positional(y)
        t, pad = tokens(y), pad.flatten(1)
        if self.cls is not None:
            # the class token and its mask column, shaped from the data (a dynamic batch)
            t = torch.cat([self.cls + torch.zeros_like(t[:, :1]), t], dim=1)
            pad = torch.cat([torch.zeros_like(pad[:, :1]), pad], dim=1)
        for block in self.blocks:
            t = block(t, pad).masked_fill(pad[..., None], 0.0)
        t = self.norm(t)
        if self.cls is not None:
            return self.head(t[:, 0])
        keep = (~pad).to(t.dtype)[..., None]
        return self.head((t * keep).sum(1) / keep.sum(1).clamp(min=1.0))


def build(arch: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return TransformerNet(arch, input_shape, num_classes)


def check(space: Space, origin: str) -> None:
    """Every value the space can produce must build: known stems, encodings and poolings,
    and every embedding dim divisible by every number of heads."""

    def fail(field: str, message: str) -> SpaceError:
        return SpaceError(f"{origin}: space.{field}: {message}")

    def values(field: str, required: bool = False) -> list[Any]:
        if space.domain(field) is None:
            if required:
                raise fail(field, "missing (the transformer model needs embed_dim and layers)")
            return [DEFAULTS[field.rpartition(".")[2]]] if field in DEFAULTS else []
        options = space.values(field)
        if options is None:
            raise fail(field, "must be a constant, a choice or an int range")
        return options

    layers = space.domain("layers")
    if not isinstance(layers, Repeat) or not isinstance(layers.block, Group):
        raise fail("layers", "the transformer model needs 'layers: {repeat: [min, max], "
                   "block: {heads: ..., mlp_ratio: ...}}'")
    top = (*DEFAULTS, "embed_dim", "layers", "train")
    for prefix, names, known in (("", space.root.fields, top),
                                 ("layers.block.", layers.block.fields, LAYER_FIELDS)):
        for name, _ in names:
            if name not in known:
                raise fail(f"{prefix}{name}", f"unknown field{did_you_mean(name, known)}; "
                           f"known: {', '.join(known)}")
    for field, known in (("stem", STEMS), ("positional", POSITIONAL), ("pooling", POOLING)):
        for v in values(field):
            if v not in known:
                raise fail(field, f"unknown {field} {show(v)}{did_you_mean(str(v), known)}; known: "
                           f"{', '.join(known)}")
    for field in ("embed_dim", "patch_size", "vocab", "layers.heads"):
        for v in values(field, required=field in ("embed_dim", "layers.heads")):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise fail(field, f"must be positive integers, got {show(v)}")
    for v in values("layers.mlp_ratio", required=True):
        if not isinstance(v, int | float) or isinstance(v, bool) or v <= 0:
            raise fail("layers.mlp_ratio", f"must be positive numbers, got {show(v)}")
    for v in values("dropout"):
        if not isinstance(v, int | float) or isinstance(v, bool) or not 0 <= v < 1:
            raise fail("dropout", f"must be in [0, 1), got {show(v)}")
    for dim in values("embed_dim"):
        for heads in values("layers.heads"):
            if dim % heads:
                raise fail("layers.heads", f"embed_dim {dim} is not divisible by {heads} heads")
