"""Object detection (docs/detection.md): boxes (``coco:DIR``), torchvision detectors on a searched
backbone and neck, COCO mAP from torchmetrics, export of detectors."""

from __future__ import annotations

from raynas.data import Source, register_source
from raynas.estimation.task import Task, register_task
from raynas.models import ModelBuilder, register_builder
from raynas.objectives.metrics import Metric, register_metric

register_task(Task(
    "detection", "raynas.estimation.detection:detection_trial",
    "raynas.estimation.detection:retrain_detector", models=("detection",),
    does="detects objects", holds="has boxes per image", spaces="detection",
    data="boxes (coco:DIR; docs/detection.md)", fidelities=(),
    export="raynas.experiment.export:export_detector"))
register_builder(ModelBuilder(
    "detection", "raynas.models.detection", task="detection", example=("detection", (3, 64, 64)),
    graph="raynas.report.graph:detection_graph",
    check_output="raynas.models.detection:check_output"))
register_source(Source("coco", "raynas.detections:load", "coco:DIR",
                       help="images with boxes in COCO's JSON (annotations.json + images/)"))
for _name in ("val_map", "val_map_50", "val_map_75"):  # COCO mAP@[.5:.95], @.5, @.75
    register_metric(Metric(_name, "unit"))
