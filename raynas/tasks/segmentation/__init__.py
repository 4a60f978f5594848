"""3-D medical segmentation (docs/medical.md): a class per voxel, NIfTI volumes (``nifti:DIR``),
MONAI's losses and metrics, a searched 3-D U-Net (``unet3d``)."""

from __future__ import annotations

from raynas.data import Source, from_arrays, register_source
from raynas.estimation.task import Task, register_task
from raynas.models import ModelBuilder, register_builder
from raynas.objectives.metrics import Metric, register_metric

register_task(Task(
    "segmentation", "raynas.estimation.train:train_trial", "raynas.estimation.train:retrain",
    problem="raynas.tasks.segmentation.problem:SEGMENTATION", models=("segmentation",),
    does="segments", holds="has a mask per input", spaces="unet3d_seg",
    data="masks (nifti:DIR; docs/medical.md)", fidelities=("data", "width"),
    check="raynas.tasks.segmentation.problem:check_volumes"))
register_builder(ModelBuilder(
    "unet3d", "raynas.tasks.segmentation.model", task="segmentation",
    example=("unet3d_seg", (1, 16, 16, 16)), width=True,
    mixed_edges="raynas.tasks.segmentation.model:LevelEdges",
    graph="raynas.tasks.segmentation.graph:unet3d_graph"))
register_source(Source("nifti", from_arrays("raynas.tasks.segmentation.data:read_nifti"),
                       "nifti:DIR",
                       help="NIfTI volumes in DIR/images, masks in DIR/labels (or labels.csv)"))
register_metric(Metric("val_dice", "unit"))  # the mean foreground Dice (also val_accuracy)
register_metric(Metric("val_dice_class_", "unit", family=True))  # the Dice of each class
