"""The sequence ops: multi-head self-attention, a pre-norm transformer encoder block, patch
embedding, learned and sinusoidal positional encodings, LSTM and GRU (one or both directions).

Each is written once, on tokens (N, P, D) with a padding mask (N, P) (True where padded), and
used twice: by the transformer builder (``raynas.tasks.sequences.model``) and, wrapped by
``TokenOp``, as an op of the macro grammar, which hands ops features (N, C, *spatial) and the
mask (N, *spatial) (``raynas.models.macro``). A 2-D feature map is read as the sequence of its
pixels, row by row. No size is read from the batch dimension (shapes follow from the data:
``zeros_like``, ``reshape(-1, ...)``), so the batch stays dynamic in ``torch.export`` (MLflow's
format) and in TorchScript traced from the exported program (``raynas export``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from raynas.models.macro import resized
from raynas.ops.blocks import projection

#: The table size of a macro op's learned positional encoding along each axis; the table is
#: interpolated to the input's length, so one op takes any length (ViT's resizing).
LEARNED_POSITIONS = {1: 64, 2: 16}


def tokens(x: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) -> (N, P, C)."""
    return x.flatten(2).transpose(1, 2)


def features(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N, P, C) -> (N, C, *spatial) of ``like``."""
    return t.transpose(1, 2).reshape(-1, t.shape[2], *like.shape[2:])


class SelfAttention(nn.Module):
    """Multi-head self-attention on PyTorch's ``scaled_dot_product_attention``; padded tokens
    are never attended to (they may attend, their outputs are discarded)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, t: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        p, d = t.shape[1:]
        q, k, v = self.qkv(t).reshape(-1, p, 3, self.heads, d // self.heads).permute(
            2, 0, 3, 1, 4).unbind(0)
        keep = None if pad is None else ~pad[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(-1, p, d))


class EncoderBlock(nn.Module):
    """A pre-norm transformer encoder layer (ViT, AutoFormer): attention and an MLP of
    ``mlp_ratio`` times the width, each on the layer-normed input and added back."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = max(1, round(dim * mlp_ratio))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, t: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        t = t + self.drop(self.attention(self.norm1(t), pad))
        return t + self.drop(self.mlp(self.norm2(t)))


class PreNormAttention(nn.Module):
    """Attention alone as a macro op: on the layer-normed input, no residual (the layer's
    ``skip`` connection adds one where the search wants it)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, heads)

    def forward(self, t: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        return self.attention(self.norm(t), pad)


class Recurrent(nn.Module):
    """An LSTM or GRU over the tokens; bidirectional as two one-way layers, the backward one
    reading each sequence from its own last real step (its padding never reaches the real
    steps) and averaged with the forward one. Padding sits at the end, so the forward pass is
    untouched by it."""

    def __init__(self, kind: str, dim: int, bidirectional: bool) -> None:
        super().__init__()
        cell = nn.LSTM if kind == "lstm" else nn.GRU
        self.forward_rnn = cell(dim, dim, batch_first=True)
        self.backward_rnn = cell(dim, dim, batch_first=True) if bidirectional else None

    def forward(self, t: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        y = self.run(self.forward_rnn, t)
        if self.backward_rnn is None:
            return y
        if pad is None:
            return (y + self.run(self.backward_rnn, t.flip(1)).flip(1)) / 2
        index = reversal(pad)
        back = self.run(self.backward_rnn, reordered(t, index))
        return (y + reordered(back, index)) / 2

    @staticmethod
    def run(rnn: nn.Module, t: torch.Tensor) -> torch.Tensor:
        """``rnn`` from a zero state made from the data, not from the batch size."""
        h = torch.zeros_like(t[:, 0])[None]
        return rnn(t, (h, h) if isinstance(rnn, nn.LSTM) else h)[0]


def reversal(pad: torch.Tensor) -> torch.Tensor:
    """Per sequence, the positions that reverse its real steps and keep its padding in place
    (an involution: applied twice, it is the identity)."""
    steps = torch.arange(pad.shape[1], device=pad.device)[None]
    length = (~pad).sum(1, keepdim=True)
    return torch.where(steps < length, length - 1 - steps, steps)


def reordered(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``t`` (N, P, C) with each sequence's positions taken in its ``index`` (N, P) order."""
    p, c = t.shape[1:]
    rows = torch.ones_like(index[:, :1]).cumsum(0) - 1  # 0..N-1, from the data
    return t.reshape(-1, c)[(index + rows * p).flatten()].reshape(-1, p, c)


class PatchEmbed(nn.Module):
    """Non-overlapping patches of ``patch`` steps or ``patch`` x ``patch`` pixels, each
    projected linearly to ``dim`` channels (ViT's patch embedding, a strided convolution).
    The input is padded at the far end to whole patches, so the size is divided rounding up."""

    def __init__(self, c_in: int, dim: int, patch: int, dims: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = (nn.Conv1d if dims == 1 else nn.Conv2d)(c_in, dim, patch, patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        short = [(-s) % self.patch for s in x.shape[2:]]
        if any(short):
            x = F.pad(x, [v for s in reversed(short) for v in (0, s)])
        return self.proj(x)


class Positional(nn.Module):
    """Positions added to features (N, C, *spatial): ``sinusoidal`` (Vaswani et al.; on
    images half the channels encode the row, half the column) or ``learned`` (a table of
    ``size`` per axis, interpolated when the input has another size)."""

    def __init__(self, kind: str, dim: int, size: tuple[int, ...]) -> None:
        super().__init__()
        self.kind = kind
        self.table = nn.Parameter(0.02 * torch.randn(1, dim, *size)) if kind == "learned" \
            else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.table is None:
            return x + sinusoid(x.shape[1], tuple(x.shape[2:]), x.device, x.dtype)
        table = self.table
        if table.shape[2:] != x.shape[2:]:
            mode = "linear" if x.dim() == 3 else "bilinear"
            table = F.interpolate(table, size=x.shape[2:], mode=mode, align_corners=False)
        return x + table


def sinusoid(dim: int, size: tuple[int, ...], device: torch.device,
             dtype: torch.dtype) -> torch.Tensor:
    """The sinusoidal encoding (1, dim, *size); on a grid, the first half of the channels
    encode the row and the rest the column."""
    if len(size) == 2:
        rows = sinusoid(dim - dim // 2, (size[0],), device, dtype)[..., :, None]
        cols = sinusoid(dim // 2, (size[1],), device, dtype)[..., None, :]
        return torch.cat([rows.expand(-1, -1, *size), cols.expand(-1, -1, *size)], dim=1)
    position = torch.arange(size[0], device=device, dtype=torch.float32)
    frequency = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32)
                          * (-math.log(10000.0) / max(dim, 1)))
    angles = frequency[:, None] * position[None]  # ceil(dim / 2), L
    table = torch.stack([angles.sin(), angles.cos()], dim=1).reshape(-1, size[0])[:dim]
    return table[None].to(dtype)


class TokenOp(nn.Module):
    """A token-layout ``body`` as a macro op: a 1x1 projection to ``c_out`` channels (strided
    by the layer's stride; nothing when both match), then the body on the tokens, with the
    layer's padding mask resized to the strided features."""

    def __init__(self, body: nn.Module, c_in: int, c_out: int, stride: int, dims: int,
                 masked: bool) -> None:
        super().__init__()
        self.project = projection(c_in, c_out, stride, dims)
        self.body, self.masked = body, masked

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        x = self.project(x)
        if not self.masked:
            return self.body(x)
        if pad is not None:
            pad = resized(pad, tuple(x.shape[2:])).flatten(1)
        return features(self.body(tokens(x), pad), x)


# The factories of the sequence ops (``raynas.ops.Op.make``; ``Op.options`` give the keywords).
def attention(c_in: int, c_out: int, stride: int, dims: int, *, heads: int) -> nn.Module:
    return TokenOp(PreNormAttention(c_out, heads), c_in, c_out, stride, dims, masked=True)


def transformer(c_in: int, c_out: int, stride: int, dims: int, *, heads: int,
                mlp_ratio: float) -> nn.Module:
    return TokenOp(EncoderBlock(c_out, heads, mlp_ratio), c_in, c_out, stride, dims,
                   masked=True)


def recurrent(c_in: int, c_out: int, stride: int, dims: int, *, kind: str,
              bidirectional: bool) -> nn.Module:
    return TokenOp(Recurrent(kind, c_out, bidirectional), c_in, c_out, stride, dims,
                   masked=True)


def positional(c_in: int, c_out: int, stride: int, dims: int, *, kind: str) -> nn.Module:
    size = (LEARNED_POSITIONS[dims],) * dims
    return TokenOp(Positional(kind, c_out, size), c_in, c_out, stride, dims, masked=False)


def patch_embed(c_in: int, c_out: int, stride: int, dims: int) -> nn.Module:
    """Patches as large as the layer's stride (stride 1: each position projected alone)."""
    return PatchEmbed(c_in, c_out, stride, dims)
