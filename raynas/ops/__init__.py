"""The op registry: every op a builder can put on a layer or an edge is an ``Op`` in ``OPS``, a
factory ``(c_in, c_out, stride, dims) -> nn.Module`` with what it needs declared, so builders and
checks ask the descriptor instead of keeping name lists.

An op says which inputs it takes (``Op.dims``: 1-D sequences, 2-D images, 3-D volumes), so a
space is checked against its data before a search starts. The core's ops are in
``raynas.ops.blocks``; applications register theirs (attention, recurrence) from their folders.
This module stays light (no torch): factories are ``"module:attr"`` references, imported when an
op is first built, so a plug-in registers ops without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raynas.errors import SpaceError
from raynas.registry import Ref, Registry, load_ref

#: What inputs of each dimensionality are, and their shape, for errors.
SHAPES = {1: ("sequences", "(C, L)"), 2: ("images", "(C, H, W)"), 3: ("volumes", "(C, D, H, W)")}
ANY_DIMS = frozenset(SHAPES)
BLOCKS = "raynas.ops.blocks"


@dataclass(frozen=True)
class Op:
    """An op: ``make`` (a ``Ref``) builds it for ``(c_in, c_out, stride, dims)``; it keeps the
    size (stride 1) or divides it by the stride, rounding up. ``dims``: the input
    dimensionalities it takes. ``masked``: its ``forward(x, pad)`` also takes the padding mask
    (True at padded positions, shaped like ``x`` without channels) and ignores those positions
    (attention, recurrence); the others see zeros there. ``multiple``: ``c_out`` must be a
    multiple of it (an attention op's heads), checked when a space loads. ``requires``: a
    ``Ref`` to ``() -> None`` raising a one-line error if a package it needs is missing.
    ``options``: keyword arguments of ``make``, so one factory makes a family of ops."""

    name: str
    make: Ref
    dims: frozenset[int] = ANY_DIMS
    masked: bool = False
    multiple: int = 1
    requires: Ref | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __call__(self, c_in: int, c_out: int, stride: int, dims: int) -> Any:
        if dims not in self.dims:
            takes = " or ".join(f"{SHAPES[d][0]} shaped {SHAPES[d][1]}" for d in sorted(self.dims))
            raise SpaceError(f"op {self.name!r}: its inputs need {takes}, not {dims}-D inputs")
        return load_ref(self.make)(c_in, c_out, stride, dims, **self.options)

    def check(self) -> None:
        """A one-line error if what the op needs is not installed."""
        if self.requires is not None:
            load_ref(self.requires)()


OPS: Registry[Op] = Registry("op", "op")
register_op = OPS.register

for _op in (
    Op("conv_3x3", f"{BLOCKS}:conv", options={"k": 3}),
    Op("conv_5x5", f"{BLOCKS}:conv", options={"k": 5}),
    Op("conv_7x7", f"{BLOCKS}:conv", options={"k": 7}),
    Op("dw_conv_3x3", f"{BLOCKS}:dw_conv", options={"k": 3}),
    Op("dw_conv_5x5", f"{BLOCKS}:dw_conv", options={"k": 5}),
    Op("max_pool_3x3", f"{BLOCKS}:pool", options={"kind": "max"}),
    Op("avg_pool_3x3", f"{BLOCKS}:pool", options={"kind": "avg"}),
    Op("identity", f"{BLOCKS}:projection"),
    Op("zero", f"{BLOCKS}:zero"),
):
    register_op(_op)
# The medical ops: MONAI blocks for volumes (N, C, D, H, W) only.
for _op in (
    Op("3d_conv_3x3x3", f"{BLOCKS}:monai_conv", options={"k": 3}),
    Op("3d_conv_5x5x5", f"{BLOCKS}:monai_conv", options={"k": 5}),
    Op("3d_max_pool_2x2x2", f"{BLOCKS}:pool_2x2x2", options={"kind": "max"}),
    Op("3d_avg_pool_2x2x2", f"{BLOCKS}:pool_2x2x2", options={"kind": "avg"}),
    Op("attention_gate", f"{BLOCKS}:AttentionGate"),
    Op("multi_scale_fusion", f"{BLOCKS}:MultiScaleFusion"),
    Op("skip_connection_3d", f"{BLOCKS}:residual_unit"),
    Op("dense_connection_3d", f"{BLOCKS}:dense_unit"),
):
    register_op(Op(_op.name, _op.make, dims=frozenset({3}), requires=f"{BLOCKS}:monai_blocks",
                   options=_op.options))
