"""The sequence ops and the transformer model: shapes for sequences and images, padding that
changes nothing of the outputs at real positions (and would, unmasked), costs measured like
every op's, exports, and the space checks."""

from __future__ import annotations

import random

import pytest
import torch

from raynas.errors import SpaceError
from raynas.estimation import load_space
from raynas.models import build_model
from raynas.objectives.measure import count_flops, count_params, measure_latency, peak_memory_mb
from raynas.ops import OPS
from raynas.tasks.sequences.layers import SelfAttention

SEQUENCE_OPS = [name for name, op in OPS.items() if op.make.startswith("raynas.tasks.sequences")]
TRAIN = {"lr": 1e-3, "weight_decay": 1e-4, "batch_size": 16, "optimizer": "adamw"}


def padded(x: torch.Tensor, length: int) -> torch.Tensor:
    """``x`` (N, C, L) padded with NaN to ``length`` steps."""
    out = torch.full((*x.shape[:2], length), float("nan"))
    out[..., : x.shape[2]] = x
    return out


def test_the_family_is_registered():
    assert {"attention_4h", "transformer_4h_r2", "lstm", "bilstm", "gru", "bigru",
            "pos_learned", "pos_sinusoidal", "patch_embed"} <= set(SEQUENCE_OPS)
    assert all(OPS[op].dims == {1, 2} for op in SEQUENCE_OPS)


@pytest.mark.parametrize("op", SEQUENCE_OPS)
@pytest.mark.parametrize("shape", [(3, 11), (3, 5, 7)], ids=["1d", "2d"])
def test_op_shapes_and_gradients(op, shape):
    x = torch.randn(2, *shape, requires_grad=True)
    for stride in (1, 2):
        module = OPS[op](3, 8, stride, len(shape) - 1)
        y = module(x)
        assert y.shape == (2, 8, *(-(-s // stride) for s in shape[1:]))
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_ops_refuse_volumes():
    with pytest.raises(SpaceError, match=r"op 'attention_4h': its inputs need sequences shaped "
                                         r"\(C, L\) or images shaped \(C, H, W\), not 3-D"):
        OPS["attention_4h"](3, 8, 1, 3)


def test_attention_never_attends_to_padded_positions():
    torch.manual_seed(0)
    attention = SelfAttention(8, 2).eval()
    t = torch.randn(1, 6, 8)
    pad = torch.tensor([[False] * 4 + [True] * 2])
    other = t.clone()
    other[:, 4:] = 100 * torch.randn(1, 2, 8)  # whatever sits at the padded positions
    masked = attention(t, pad)[:, :4], attention(other, pad)[:, :4]
    torch.testing.assert_close(*masked)
    # without the mask, the padded positions are attended to: the same check fails
    assert not torch.allclose(attention(t)[:, :4], attention(other)[:, :4])
    torch.testing.assert_close(masked[0], attention(t[:, :4]))  # as if they were not there


MACRO_LAYERS = [{"op": "bilstm", "channels": 32, "stride": 2, "connection": "skip"},
                {"op": "transformer_4h_r2", "channels": 32, "stride": 1, "connection": "series"},
                {"op": "conv_3x3", "channels": 32, "stride": 1, "connection": "skip"},
                {"op": "attention_4h", "channels": 32, "stride": 2, "connection": "parallel"},
                {"op": "bigru", "channels": 64, "stride": 1, "connection": "series"}]


@pytest.mark.parametrize("space, arch", [
    ("conv_attention_1d", {"stem_channels": 32, "layers": MACRO_LAYERS}),
    ("transformer_seq", {"stem": "conv", "patch_size": 2, "embed_dim": 32,
                         "positional": "learned", "pooling": "mean", "dropout": 0.1,
                         "layers": [{"heads": 4, "mlp_ratio": 2}, {"heads": 2, "mlp_ratio": 1}]}),
    ("transformer_seq", {"stem": "patch", "patch_size": 2, "embed_dim": 32,
                         "positional": "sinusoidal", "pooling": "cls", "dropout": 0.0,
                         "layers": [{"heads": 4, "mlp_ratio": 4}]}),
], ids=["macro", "transformer-mean", "transformer-cls"])
def test_padding_changes_nothing_of_the_logits(space, arch):
    """A series padded to 20 or to 33 steps (NaN) gets the same logits as unpadded; the
    sequence sits in a batch with a longer one, as variable-length sets are batched."""
    loaded = load_space(space)
    arch = {"space": space, **arch, "train": TRAIN}
    torch.manual_seed(0)
    model = build_model(loaded, arch, (2, 20), 3).eval()
    short, long = torch.randn(1, 2, 12), torch.randn(1, 2, 20)
    alone = model(padded(short, 20))
    batched = model(torch.cat([padded(short, 20), long]))
    torch.testing.assert_close(batched[:1], alone)
    if arch.get("positional") != "learned":  # a learned table is as long as the input
        longer = build_model(loaded, arch, (2, 33), 3).eval()
        longer.load_state_dict(model.state_dict())
        torch.testing.assert_close(longer(padded(short, 33)), alone)
    # the padding is what the mask hides: the same steps as zeros give other logits
    assert not torch.allclose(model(torch.nan_to_num(padded(short, 20))), alone, atol=1e-4)


def test_every_cost_is_measured_for_attention_and_recurrence():
    loaded = load_space("conv_attention_1d")
    arch = {"space": "conv_attention_1d", "stem_channels": 32, "layers": MACRO_LAYERS,
            "train": TRAIN}
    model = build_model(loaded, arch, (2, 20), 3)
    assert count_params(model) > 0 and measure_latency(model, (2, 20)) > 0
    assert peak_memory_mb(model, (2, 20), 16) > 0
    # PyTorch's counter misses the CPU attention and LSTM kernels: raynas counts them
    lstm = OPS["lstm"](16, 16, 1, 1)
    assert count_flops(lstm, (16, 10)) == 2 * 10 * (16 * 64 + 16 * 64)
    attention = SelfAttention(16, 4)
    linear = 2 * 10 * 16 * 48 + 2 * 10 * 16 * 16  # qkv and output projections
    assert count_flops(attention, (10, 16)) == linear + 2 * 2 * 10 * 10 * 16


@pytest.mark.parametrize("space, arch", [
    ("conv_attention_1d", {"stem_channels": 32, "layers": MACRO_LAYERS}),
    ("transformer_seq", {"stem": "conv", "embed_dim": 32, "positional": "learned",
                         "pooling": "cls", "layers": [{"heads": 4, "mlp_ratio": 2}]}),
], ids=["macro", "transformer"])
def test_export_keeps_the_batch_dynamic(space, arch):
    """MLflow keeps models as ``torch.export`` programs with a dynamic batch; ``raynas export``
    traces TorchScript from that program and runs it on other batch sizes."""
    loaded = load_space(space)
    model = build_model(loaded, {"space": space, **arch, "train": TRAIN}, (2, 16), 4).eval()
    x = torch.cat([padded(torch.randn(3, 2, 10), 16), torch.randn(2, 2, 16)])
    program = torch.export.export(model, (x,), dynamic_shapes={
        "x": {0: torch.export.Dim("batch", min=1)}})
    traced = torch.jit.trace(program.module(), x)
    for batch in (x[:1], x[1:4], torch.cat([x, x])):
        torch.testing.assert_close(program.module()(batch), model(batch))
        torch.testing.assert_close(traced(batch), model(batch))


def test_vit_tiny_on_images():
    loaded = load_space("vit_tiny")
    rng = random.Random(0)
    for _ in range(4):
        model = build_model(loaded, loaded.sample(rng), (1, 8, 8), 10)
        assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_text_tokens_stem_hashes_large_ids_and_masks_the_end():
    text = load_space({"name": "t", "model": "transformer", "space": {
        "stem": "tokens", "vocab": 50, "embed_dim": 16, "pooling": "mean",
        "positional": "sinusoidal",
        "layers": {"repeat": [2, 2], "block": {"heads": 2, "mlp_ratio": 2}}}})
    model = build_model(text, text.sample(random.Random(0)), (1, 9), 2).eval()
    ids = torch.tensor([[[3, 7, 60, 2] + [float("nan")] * 5]])
    hashed = torch.tensor([[[3, 7, 10, 2] + [float("nan")] * 5]])
    torch.testing.assert_close(model(ids), model(hashed))
    torch.testing.assert_close(model(ids), model(ids[..., :4]))


@pytest.mark.parametrize("edit, message", [
    ({"embed_dim": 30}, r"transformer_seq: space.layers.heads: embed_dim 30 is not divisible "
                        r"by 4 heads$"),
    ({"pooling": "max"}, r"space.pooling: unknown pooling 'max'"),
    ({"embed_dims": 32}, r"space.embed_dims: unknown field \(did you mean 'embed_dim'\?\)"),
])
def test_bad_transformer_spaces_are_one_line(edit, message):
    doc = {"name": "transformer_seq", "model": "transformer",
           "space": {"embed_dim": 32, "layers": {"repeat": [1, 2], "block": {
               "heads": {"choice": [2, 4]}, "mlp_ratio": 2}}, **edit}}
    with pytest.raises(SpaceError, match=message) as info:
        load_space(doc)
    assert "\n" not in str(info.value)


def test_macro_channels_must_divide_into_the_heads():
    doc = {"name": "mixed", "model": "macro", "space": {"layers": {"repeat": [1, 2], "block": {
        "op": {"choice": ["conv_3x3", "attention_8h"]}, "channels": {"choice": [16, 20]},
        "stride": 1, "connection": "series"}}}}
    with pytest.raises(SpaceError, match=r"mixed: space.layers.channels: 20 is not divisible by "
                                         r"the 8 heads of op 'attention_8h'"):
        load_space(doc)
