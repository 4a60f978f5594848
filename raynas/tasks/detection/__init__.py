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
from raynas.data.commands import DataCommand, register_data_command
from raynas.estimation.task import Task, register_task
from raynas.models import ModelBuilder, SpaceFlag, register_builder
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
    check_output="raynas.tasks.detection.model:check_output",
    flags=(SpaceFlag("--backbone-weights", "backbone_weights", "PATH",
                     "a torchvision network's weights on disk (a state dict; e.g. "
                     "torch.save(resnet18().state_dict(), PATH)) to start the space's fixed "
                     "backbone from, its BatchNorm frozen", path=True),)))
register_source(Source("coco", "raynas.tasks.detection.data:load", "coco:DIR",
                       help="images with boxes in COCO's JSON (annotations.json + images/); "
                            "?tile=N: on tiles"))
register_source(Source("voc", "raynas.tasks.detection.data:load", "voc:DIR",
                       help="images with boxes in Pascal VOC XML (Annotations/, JPEGImages/, "
                            "ImageSets/Main/test.txt); ?tile=N: on tiles"))
register_source(Source("csv", "raynas.tasks.detection.data:load", "csv:FILE",
                       help="images with boxes, a row each (image_path,xmin,ymin,xmax,ymax,"
                            "label); ?tile=N: on tiles"))


def _folder_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="DIR", help="where to write them")


register_data_command(DataCommand(
    "real-trees", "lay out the 4 NEON aerial images with 951 tree crowns shipped in the "
    "deepforest wheel (pip install --no-deps 'deepforest==2.1.*') as voc:DIR: train on the two "
    "Yellowstone crops, test on two other forests",
    _folder_flag,
    "raynas.tasks.detection.formats:real_trees_command"))
for _name in ("val_map", "val_map_50", "val_map_75"):  # COCO mAP@[.5:.95], @.5, @.75
    register_metric(Metric(_name, "unit"))


def _bench_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default=None, metavar="SPEC",
                        help="coco:DIR, voc:DIR or csv:FILE, ?tile=N on tiles (e.g. raynas data "
                             "real-trees); default: raynas data synth-detection's 300 images, "
                             "in a temporary folder")
    parser.add_argument("--trials", type=int, default=12,
                        help="per search (default: %(default)s)")
    parser.add_argument("--max-epochs", type=int, default=8,
                        help="per trial (default: %(default)s)")
    parser.add_argument("--retrain-epochs", type=int, default=15,
                        help="of the best and of the baseline (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="searches, each on its own data split (default: %(default)s)")
    parser.add_argument("--strategy", default="tpe", help="default: %(default)s")
    parser.add_argument("--space", default="detection",
                        help="searched; detection_tiles also searches the input size "
                             "(default: %(default)s)")
    parser.add_argument("--reference", choices=("fcos", "retinanet"), default="fcos",
                        help="torchvision's head on the ResNet-18-FPN reference, trained from "
                             "scratch (default: %(default)s)")
    parser.add_argument("--input-scale", type=float, default=1.0,
                        help="the fixed detectors' input size, a share of the images' or tiles' "
                             "(the search chooses its own; default: %(default)s)")
    parser.add_argument("--output", default="bench_detection.json",
                        help="JSON results (the rows also in FILE.csv; default: %(default)s)")


register(Benchmark("detection", "a detection search against a fixed baseline detector and "
                   "torchvision's ResNet-18-FPN, trained the same way (test mAP@.5)", _bench_flags,
                   "raynas.tasks.detection.bench:main"))
