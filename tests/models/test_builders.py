"""The model-builder contract (``raynas.testing.check_builder``): every registered builder,
plug-ins included, passes it, and a builder that breaks a declared capability fails it with the
capability named."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from raynas.models import BUILDERS, SpaceFlag, macro
from raynas.models.cell import NB201Builder, NB201Edges
from raynas.registry import load_ref
from raynas.testing import check_builder


@pytest.fixture(autouse=True)
def one_thread():
    """As in a trial: one thread (on a loaded 2-core machine two make small convolutions
    much slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_every_registered_builder_keeps_the_contract(name):
    check_builder(name)


def test_the_builders_of_the_plugins_are_checked_too():
    assert {"macro", "nb201", "darts", "unet3d", "detection", "ofa"} <= set(BUILDERS)


def test_an_unknown_builder_fails():
    with pytest.raises(AssertionError, match="model builder 'nope': not registered; known: "
                                             "macro, "):
        check_builder("nope")


def _macro(**overrides) -> SimpleNamespace:
    """The macro builder's module with some of its functions replaced."""
    return SimpleNamespace(**{"check": macro.check, "build": macro.build,
                              "latency_units": macro.latency_units, **overrides})


def _two_more_logits(arch, input_shape, num_classes, width=1.0):
    return macro.build(arch, input_shape, num_classes + 2, width)


def _ignores_width(arch, input_shape, num_classes, width=1.0):
    return macro.build(arch, input_shape, num_classes)


def _no_head(arch, input_shape, num_classes):
    return macro.latency_units(arch, input_shape, num_classes)[:-1]


@pytest.mark.parametrize("change, message", [
    ({"implementation": _macro(build=_two_more_logits)},
     r"sampled architecture 0: build and run: expected logits shaped \(2, 3\), got \(2, 5\)"),
    ({"implementation": _macro(build=_ignores_width)},
     r"width: a network at width 0.5: \d+ parameters, not fewer than at width 1"),
    ({"implementation": _macro(latency_units=_no_head)},
     r"latency_units: the units hold \d+ parameters, the network \d+"),
    ({"graph": lambda arch: []},
     r"graph of sampled architecture 0: expected a list of Graph panels, got \[\]"),
    ({"task": "translation"}, r"task 'translation' is not registered"),
    ({"task": "tabular"}, r"task 'tabular' has no Problem, so the builder must declare "
                          r"check_output"),
    ({"flags": (SpaceFlag("--max-epochs", "epochs", "N", "clashes"),)},
     r"flags: --max-epochs: --max-epochs is a setting of raynas search itself"),
    ({"flags": (SpaceFlag("--backbone-weights", "backbone_weights", "PATH", "twice"),)},
     r"flags: --backbone-weights: --backbone-weights is the flag of builders macro, detection"),
])
def test_a_broken_capability_is_named(monkeypatch, change, message):
    monkeypatch.setitem(BUILDERS, "macro", replace(BUILDERS["macro"], **change))
    with pytest.raises(AssertionError, match=r"model builder 'macro' \(example macro_cnn, "
                                             rf"inputs \(1, 8, 8\)\): {message}"):
        check_builder("macro")


def test_a_genotype_that_does_not_round_trip_fails(monkeypatch):
    class Forgetful(NB201Builder):
        @staticmethod
        def parse(text):  # every edge the first one's op
            cell = NB201Builder.parse(text)["cell"]
            return {"cell": dict.fromkeys(cell, cell["edge_1_0"])}

    monkeypatch.setitem(BUILDERS, "nb201", replace(BUILDERS["nb201"], implementation=Forgetful))
    with pytest.raises(AssertionError, match=r"genotype: describe, then parse, sampled "
                                             r"architecture \d: '\|.*' parses to another"):
        check_builder("nb201")


class Unmixed(NB201Edges):
    """Builds the template's own network: no edge is mixed."""

    def network(self, input_shape, num_classes, mix):
        return NB201Builder.build(self.template, input_shape, num_classes)


class Partial(NB201Edges):
    """Paths that leave out the last edge."""

    def path(self, arch):
        return {"cell": super().path(arch)["cell"][:-1]}


@pytest.mark.parametrize("hook, message", [
    (Unmixed, "the network holds fewer mixed ops than kinds"),
    (Partial, "a path has not one op per edge of every kind"),
    (NB201Builder, "is not a MixedEdges class"),
])
def test_broken_mixed_edges_fail(monkeypatch, hook, message):
    monkeypatch.setitem(BUILDERS, "nb201", replace(BUILDERS["nb201"], mixed_edges=hook))
    with pytest.raises(AssertionError, match=f"mixed_edges: a supernet: .*{message}"):
        check_builder("nb201")


class _Detector(nn.Module):
    """Fixed detections in eval mode, one learnable loss in training mode."""

    def __init__(self, boxes: list[list[float]], labels: list[int]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.boxes, self.labels = torch.tensor(boxes), torch.tensor(labels)

    def forward(self, images, targets=None):
        if self.training:
            return {"loss": self.weight * 2}
        n = len(self.labels)
        return [{"boxes": self.boxes, "scores": torch.full((n,), 0.5), "labels": self.labels}
                for _ in images]


@pytest.mark.parametrize("boxes, labels, message", [
    ([[1.0, 2.0, 30.0, 40.0]], [2], None),
    ([[1.0, 2.0, 30.0, 70.0]], [2], "a box is not .* inside the 64x64 image"),
    ([[30.0, 2.0, 1.0, 40.0]], [2], r"a box is not \(x1, y1, x2, y2\)"),
    ([[1.0, 2.0, 30.0, 40.0]], [3], "a label outside 0..2"),
    ([[1.0, 2.0, 30.0, 40.0]], [1, 2], r"boxes \(1, 4\), scores \(2,\), labels \(2,\)"),
])
def test_detectors_return_boxes_inside_the_image_with_known_labels(boxes, labels, message):
    check = load_ref(BUILDERS["detection"].check_output)
    detector = _Detector(boxes, labels)
    if message is None:
        check(detector, (3, 64, 64), 3)
        assert detector.weight.grad == 2
        return
    with pytest.raises(AssertionError, match=message):
        check(detector, (3, 64, 64), 3)
