"""Object detection (docs/detection.md): boxes (``coco:DIR``), torchvision detectors on a searched
backbone and neck, COCO mAP from torchmetrics, export of detectors, and a benchmark against a
fixed baseline detector.

The work is in the sibling modules, named here lazily: ``data`` (``coco:DIR`` and demo shapes),
``model`` (the ``detection`` builder and its graph), ``metric`` (box mAP), ``train`` (trials,
the final training, the served ``BoxPredictor``), ``picture`` (boxes drawn on test images),
``export`` (TorchScript and ONNX of a ``BoxPredictor``) and ``bench``."""

from __future__ import annotations

import argparse

from raynas.bench.registry import Benchmark, register
from raynas.data import Source, register_source
from raynas.estimation.task import Task, register_task
from raynas.models import ModelBuilder, register_builder
from raynas.objectives.metrics import Metric, register_metric

register_task(Task(
    "detection", "raynas.tasks.detection.train:detection_trial",
    "raynas.tasks.detection.train:retrain_detector", models=("detection",),
    does="detects objects", holds="has boxes per image", spaces="detection",
    data="boxes (coco:DIR; docs/detection.md)", fidelities=(),
    export="raynas.tasks.detection.export:export_detector"))
register_builder(ModelBuilder(
    "detection", "raynas.tasks.detection.model", task="detection",
    example=("detection", (3, 64, 64)), graph="raynas.tasks.detection.model:graph",
    check_output="raynas.tasks.detection.model:check_output"))
register_source(Source("coco", "raynas.tasks.detection.data:load", "coco:DIR",
                       help="images with boxes in COCO's JSON (annotations.json + images/)"))
for _name in ("val_map", "val_map_50", "val_map_75"):  # COCO mAP@[.5:.95], @.5, @.75
    register_metric(Metric(_name, "unit"))


def _bench_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default=None, metavar="coco:DIR",
                        help="default: raynas data synth-detection's 300 images, in a "
                             "temporary folder")
    parser.add_argument("--trials", type=int, default=12,
                        help="per search (default: %(default)s)")
    parser.add_argument("--max-epochs", type=int, default=8,
                        help="per trial (default: %(default)s)")
    parser.add_argument("--retrain-epochs", type=int, default=15,
                        help="of the best and of the baseline (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="searches, each on its own data split (default: %(default)s)")
    parser.add_argument("--strategy", default="tpe", help="default: %(default)s")
    parser.add_argument("--output", default="bench_detection.json",
                        help="JSON results (the rows also in FILE.csv; default: %(default)s)")


register(Benchmark("detection", "a detection search against a fixed baseline detector trained "
                   "the same way (test mAP@.5)", _bench_flags, "raynas.tasks.detection.bench:main"))
