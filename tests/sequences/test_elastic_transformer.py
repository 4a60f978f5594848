"""The elastic transformer (``raynas.tasks.sequences.elastic``): a sub-transformer extracted
stand-alone computes exactly what the supernet computes with that setting, for each elastic
dimension and with padded sequences; it uses the leading slices of the largest one's weights
and nothing else; progressive shrinking trains it on a real UCR set."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from raynas.cli import main
from raynas.data import load_dataset
from raynas.errors import ConfigError, SpaceError
from raynas.estimation import load_space
from raynas.estimation.train import tensors
from raynas.experiment.export import export_model
from raynas.models import build_model
from raynas.objectives.measure import count_params
from raynas.ofa.shrinking import ProgressiveShrinking, sample_arch
from raynas.ofa.specialize import specialize
from raynas.ofa.supernets import supernet_of
from raynas.tasks.sequences.elastic import ElasticTransformer, leading

SHAPE = (2, 20)
SHIPPED = Path(__file__).resolve().parents[2] / "search_spaces" / "transformer_elastic.yaml"
TINY = {
    "name": "transformer_tiny", "model": "transformer", "description": "elastic test space",
    "space": {"stem": "conv", "positional": "learned", "pooling": "cls", "dropout": 0.1,
              "embed_dim": {"choice": [8, 16]},
              "layers": {"repeat": [1, 3], "block": {"heads": {"choice": [1, 2, 4]},
                                                     "mlp_ratio": {"choice": [1, 2]}}}},
}


def trained_like(doc: dict, shape: tuple[int, ...] = SHAPE) -> ElasticTransformer:
    """A supernet whose BatchNorm statistics and LayerNorm affine parameters are not at their
    initial values (unit statistics and weights would hide a wrong slice)."""
    torch.manual_seed(0)
    net = ElasticTransformer(load_space(doc), shape, 3)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm1d | torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return net.eval()


def with_padding(x: torch.Tensor) -> torch.Tensor:
    """``x`` whose second sequence ends after 13 of its steps (NaN after, as ``ucr:`` pads)."""
    x = x.clone()
    x[1, :, 13:] = float("nan")
    return x


@pytest.mark.parametrize("dimension", ["embed_dim", "depth", "heads", "mlp_ratio"])
def test_an_extracted_subtransformer_computes_what_the_supernet_computes(dimension):
    net = trained_like(TINY)
    x = with_padding(torch.randn(3, *SHAPE))
    full = net.use(net.choices.largest())(x)
    arch = net.choices.arch(lambda options, what: min(options) if what == dimension
                            else max(options))
    inside = net.use(arch)(x)
    alone = net.extract(arch).eval()(x)
    assert torch.allclose(inside, alone, atol=1e-6)
    assert not torch.allclose(inside, full, atol=1e-3)  # the dimension did change the network


@pytest.mark.parametrize("shared", [
    {"stem": "linear", "positional": "sinusoidal", "pooling": "mean"},
    {"stem": "patch", "patch_size": 4, "positional": "none", "pooling": "mean"},
])
def test_random_subtransformers_extract_exactly(shared):
    doc = copy.deepcopy(TINY)
    doc["space"].update(shared)
    net = trained_like(doc)
    space, x, rng = net.space, with_padding(torch.randn(3, *SHAPE)), random.Random(1)
    for _ in range(4):
        arch = space.sample(rng)
        alone = net.extract(arch)
        assert count_params(alone) == count_params(build_model(space, arch, SHAPE, 3))
        assert torch.allclose(net.use(arch)(x), alone.eval()(x), atol=1e-6)


def test_a_subtransformer_uses_only_the_leading_slices_of_the_weights():
    """Weight entanglement: the queries, keys and values are sliced each on its own; noise
    added outside the active slices does not reach the output; a training step leaves the
    weights outside them untouched."""
    net = trained_like(TINY)
    arch = net.choices.smallest()  # embed 8 of 16, one layer of MLP ratio 1
    x = torch.randn(4, *SHAPE)
    before = net.use(arch)(x)
    full = net.full.blocks[0].attention.qkv.weight
    assert torch.equal(net.weights()["blocks.0.attention.qkv.weight"],
                       torch.cat([full[i * 16 : i * 16 + 8, :8] for i in range(3)]))
    shapes = {k: v.shape for k, v in net.weights().items()}
    with torch.no_grad():
        for key, param in net.full.named_parameters():
            noise = torch.randn_like(param)
            if key in shapes:
                index = torch.arange(param.numel()).reshape(param.shape)
                noise.view(-1)[leading(index, shapes[key], key).flatten()] = 0
            param.add_(noise)
    assert torch.allclose(net.use(arch)(x), before, atol=1e-6)
    net.train()
    torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 1, 2, 0])).backward()
    grad = net.full.blocks[0].mlp[0].weight.grad
    assert grad[:8, :8].abs().sum() > 0 and grad[8:].abs().sum() == grad[:, 8:].abs().sum() == 0
    assert net.full.blocks[2].mlp[0].weight.grad is None  # the third layer is not in depth 1


def test_what_the_elastic_transformer_cannot_take_is_one_line():
    with pytest.raises(SpaceError, match=r"transformer_seq: space\.stem: must be a constant"):
        ElasticTransformer(load_space("transformer_seq"), SHAPE, 3)
    with pytest.raises(ConfigError, match="the transformer supernet takes sequences"):
        supernet_of(load_space(SHIPPED), (4,), 3)
    with pytest.raises(ConfigError, match="Once-for-All needs a space of a model with an "
                                          "elastic supernet"):
        supernet_of(load_space("small_cnn"), (1, 8, 8), 3)


def test_progressive_shrinking_on_gunpoint():
    """Each phase samples its dimensions and keeps the rest largest; four phases of one epoch
    on the real series, distilled after the first; every sub-transformer runs."""
    data = load_dataset("ucr:GunPoint")
    training = ProgressiveShrinking(load_space(SHIPPED), data.input_shape, data.num_classes, 1,
                                    torch.device("cpu"), 0)
    net, rng = training.supernet, random.Random(0)
    assert training.phases == ["full", "mlp", "depth", "width"]
    largest = net.choices.largest()
    for phase, sampled in net.PHASES.items():
        archs = [sample_arch(net, phase, rng) for _ in range(60)]
        varied = {"embed_dim": {a["embed_dim"] for a in archs},
                  "depth": {len(a["layers"]) for a in archs},
                  "heads": {la["heads"] for a in archs for la in a["layers"]},
                  "mlp_ratio": {la["mlp_ratio"] for a in archs for la in a["layers"]}}
        for what, seen in varied.items():
            assert (len(seen) > 1) == (what in sampled), (phase, what, seen)
    assert largest["embed_dim"] == 64 and len(largest["layers"]) == 4
    x, y = tensors(torch.device("cpu"), data.x_train, data.y_train)
    for phase in training.phases:
        losses = training.train_epoch(x, y)
        assert ("kd_loss" in losses) == (phase != "full"), phase
        assert losses["train_loss"] == losses["train_loss"]  # finite: train_epoch checks inf


@pytest.mark.e2e
def test_once_for_all_on_a_ucr_set(ray_local, tracking, tmp_path, monkeypatch, capsys):
    """``raynas ofa train`` on ItalyPowerDemand with an elastic transformer space, then
    ``raynas specialize`` under a parameter budget: the sub-transformer it registers meets
    the budget, is tested, and exports to TorchScript."""
    monkeypatch.setenv("RAYNAS_LATENCY_DIR", str(tmp_path / "latency"))
    doc = copy.deepcopy(TINY)
    doc["space"].update({"stem": "patch", "patch_size": 4, "pooling": "mean", "embed_dim":
                         {"choice": [8, 16]}})
    path = tmp_path / "transformer_tiny.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert main(["ofa", "train", "--dataset", "ucr:ItalyPowerDemand", "--space", str(path),
                 "--epochs-per-phase", "1", "--json"]) == 0
    run = json.loads(capsys.readouterr().out)["run_id"]
    client = MlflowClient(tracking)
    assert client.get_run(run).data.params["phases"] == "full,mlp,depth,width"
    done = specialize(run, ["params<=3000"], samples=6, evaluations=20)
    space = load_space(doc)
    assert done.costs["params"] == count_params(build_model(space, done.arch, (1, 24), 2))
    assert done.costs["params"] <= 3000 < count_params(
        build_model(space, ElasticTransformer(space, (1, 24), 2).choices.largest(), (1, 24), 2))
    assert done.model_uri == "models:/transformer_tiny-params-le-3000/1"
    exported = export_model(done.model_uri, "torchscript", str(tmp_path / "export"))
    assert exported.max_abs_diff <= exported.tolerance
