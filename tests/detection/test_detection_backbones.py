"""A torchvision network as the detector's backbone, from weights a user has on disk
(``--backbone-weights PATH``, the ``detection_resnet18`` space): the detector computes what that
network computes, its BatchNorm is frozen and only its deepest stages train; a search runs with
it; a wrong file or flag is refused with one line."""

from __future__ import annotations

import random
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from torchvision.models import mobilenet_v3_small, resnet18, resnet34
from torchvision.ops.misc import FrozenBatchNorm2d

from raynas.cli import main
from raynas.config import SearchConfig, Tracking
from raynas.experiment.driver import search
from raynas.experiment.resolve import resolve
from raynas.tasks.detection.data import write_synthetic
from raynas.tasks.detection.model import build, check_output

SHAPE = (3, 64, 64)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """A ResNet-18 with weights of its own (not torchvision's init: its BatchNorm statistics
    moved), saved as a training script would, wrapped in a checkpoint dict."""
    torch.manual_seed(0)
    net = resnet18(num_classes=5)
    with torch.no_grad():
        net(torch.rand(8, 3, 64, 64) * 3)  # train mode: the running statistics move
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save({"model": net.state_dict(), "epoch": 12}, path)
    return net.eval(), path


@pytest.fixture(scope="module")
def few(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("coco") / "few", count=40, size=64)


def test_the_detector_computes_what_the_users_network_computes(trained):
    net, path = trained
    detector = build({"backbone": "resnet18", "backbone_weights": str(path),
                      "trainable_stages": 3, "levels": 3, "neck": "fpn", "head": "fcos"},
                     SHAPE, 3)
    trunk = detector.backbone.trunk
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(
            net.bn1(net.conv1(x))))))))
        assert torch.allclose(trunk.features(x)[-1], expected, atol=1e-5)
    assert all(not isinstance(m, torch.nn.BatchNorm2d) for m in trunk.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in trunk.modules())
    # torchvision's trainable_backbone_layers=3: layer2 to layer4 train, the stem and layer1 not
    training = {n.split(".")[1] for n, p in trunk.named_parameters() if p.requires_grad}
    assert training == {"layer2", "layer3", "layer4"}
    assert detector.backbone.strides == [8, 16, 32]  # layer2..layer4, the deepest three
    check_output(detector, SHAPE, 3)


def test_a_mobilenet_from_scratch_trains_all_of_it_and_detects():
    detector = build({"backbone": "mobilenet_v3_small", "trainable_stages": 1, "levels": 2,
                      "neck": "bifpn", "head": "retinanet"}, SHAPE, 3)
    trunk = detector.backbone.trunk
    assert all(p.requires_grad for p in trunk.parameters())  # no weights: nothing frozen
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in trunk.modules())
    assert detector.backbone.strides == [16, 32]
    check_output(detector, SHAPE, 3)


def test_the_flag_fixes_the_spaces_field(trained, few):
    _, path = trained
    resolved = resolve(SearchConfig(space="detection_resnet18", dataset=f"coco:{few}",
                                    fixed={"backbone_weights": str(path)}))
    assert resolved.space.document["space"]["backbone_weights"] == str(path)
    assert resolved.space.sample(random.Random(0))["backbone_weights"] == str(path)


@pytest.mark.parametrize(("space", "weights", "message"), [
    ("detection_resnet18", "nope.pt", "backbone_weights {tmp}/nope.pt: no such file"),
    ("detection_resnet18", "resnet34.pt", "backbone_weights {tmp}/resnet34.pt: not "
     "torchvision's resnet18 weights: unexpected layer1.2.conv1.weight"),
    ("detection_resnet18", "mobilenet.pt", "not torchvision's resnet18 weights: missing "
     "conv1.weight, bn1.weight, bn1.bias ...; unexpected features.0.0.weight"),
    ("detection_resnet18", "text.pt", "backbone_weights {tmp}/text.pt: not a PyTorch weights "
     "file"),
    ("detection", "resnet34.pt", "space.backbone_weights: a file of one torchvision network's "
     "weights, with a fixed backbone"),
    ("macro_cnn", "resnet34.pt", "--backbone-weights: only for spaces of model detection; "
     "--space macro_cnn is model macro"),
])
def test_a_wrong_weights_file_or_space_is_one_line_exit_2(few, tmp_path, monkeypatch, capsys,
                                                            space, weights, message):
    monkeypatch.chdir(tmp_path)
    torch.save(resnet34().state_dict(), tmp_path / "resnet34.pt")
    torch.save(mobilenet_v3_small().state_dict(), tmp_path / "mobilenet.pt")
    (tmp_path / "text.pt").write_text("not weights")
    code = main(["search", "--space", space, "--dataset", f"coco:{few}",
                 "--backbone-weights", weights])  # relative: made absolute
    err = capsys.readouterr().err.strip()
    assert code == 2 and message.format(tmp=tmp_path) in err and len(err.splitlines()) == 1


def test_a_search_and_its_final_detector_start_from_the_weights(ray_local, tracking, tmp_path,
                                                                trained, few):
    net, path = trained
    result = search(SearchConfig(
        space="detection_resnet18", dataset=f"coco:{few}", num_trials=1, max_epochs=1,
        retrain_epochs=1, fixed={"backbone_weights": str(path)},
        tracking=Tracking(tracking_uri=tracking, storage=str(tmp_path / "ray"))))
    assert result.num_trials == 1 and result.num_failed == 0
    client = MlflowClient(tracking)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.params["space.backbone_weights"] == str(path)
    space = yaml.safe_load(Path(client.download_artifacts(
        result.parent_run_id, "space.yaml", str(tmp_path))).read_text())
    assert space["space"]["backbone_weights"] == str(path)  # the final retraining's too
    # The trial builds it in a Ray worker, in a folder of its own: a path it could not read
    # would have failed it.
    # The registered detector kept the file's frozen BatchNorm statistics through its training.
    served = mlflow.pytorch.load_model(result.model_uri)
    trunk = served.detector.backbone.trunk.net
    assert torch.equal(trunk.bn1.running_mean, net.bn1.running_mean)
    assert torch.equal(trunk.layer4[1].bn2.running_var, net.layer4[1].bn2.running_var)
