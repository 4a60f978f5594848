"""3-D medical segmentation (docs/medical.md): a class per voxel, volumes of any shape and
spacing streamed from disk (``nifti:DIR``, ``msd:DIR``), trained on patches with MONAI's losses
and metrics, a searched 3-D U-Net (``unet3d``), ``raynas data real-mri`` and ``raynas bench
medical``."""

from __future__ import annotations

import argparse
from pathlib import Path

from raynas.bench.registry import Benchmark, register
from raynas.data import Source, register_source
from raynas.data.commands import DataCommand, register_data_command
from raynas.estimation.task import Task, register_task
from raynas.models import ModelBuilder, register_builder
from raynas.objectives.metrics import Metric, register_metric

register_task(Task(
    "segmentation", "raynas.tasks.segmentation.train:segmentation_trial",
    "raynas.tasks.segmentation.train:retrain_segmenter",
    problem="raynas.tasks.segmentation.problem:SEGMENTATION", models=("segmentation",),
    does="segments", holds="has a mask per input", spaces="unet3d_seg",
    data="masks (nifti:DIR; docs/medical.md)", fidelities=("data", "width"),
    check="raynas.tasks.segmentation.train:check_segmentation"))
register_builder(ModelBuilder(
    "unet3d", "raynas.tasks.segmentation.model", task="segmentation",
    example=("unet3d_seg", (1, 16, 16, 16)), width=True,
    mixed_edges="raynas.tasks.segmentation.model:LevelEdges",
    graph="raynas.tasks.segmentation.graph:unet3d_graph"))
register_source(Source("nifti", "raynas.tasks.segmentation.volumes:load_nifti",
                       "nifti:DIR[:spacing=MM]",
                       help="NIfTI volumes in DIR/images, masks in DIR/labels (or labels.csv); "
                            "resampled, streamed"))
register_source(Source("msd", "raynas.tasks.segmentation.volumes:load_msd",
                       "msd:DIR[:spacing=MM]",
                       help="a Medical Segmentation Decathlon folder (dataset.json, imagesTr/, "
                            "labelsTr/); resampled, streamed"))
register_metric(Metric("val_dice", "unit"))  # the mean foreground Dice (also val_accuracy)
register_metric(Metric("val_dice_class_", "unit", family=True))  # the Dice of each class


def _real_mri_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="DIR", help="a new or empty folder")
    parser.add_argument("--templates", type=Path, default=Path("/usr/share/mricron/templates"),
                        help="mricron-data's templates folder (default: %(default)s)")


register_data_command(DataCommand(
    "real-mri", "write two segmentation tasks on a real head MRI (Debian's mricron-data: "
    "brain extraction and AAL parcellation; the left hemisphere trains, the right tests) as "
    "nifti: folders", _real_mri_flags, "raynas.tasks.segmentation.realmri:main"))


def _bench_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", type=lambda text: text.split(","), default=["brain", "aal"],
                        help="of raynas data real-mri, comma-separated (default: brain,aal)")
    parser.add_argument("--dataset", default=None, metavar="nifti:DIR",
                        help="instead of --tasks: any segmentation dataset")
    parser.add_argument("--spacing", type=float, default=2.0,
                        help="mm the real MRI is resampled to (default: %(default)s)")
    parser.add_argument("--trials", type=int, default=6, help="(default: %(default)s)")
    parser.add_argument("--max-epochs", type=int, default=4,
                        help="per trial (default: %(default)s)")
    parser.add_argument("--retrain-epochs", type=int, default=15,
                        help="of the best and of the MONAI U-Net (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument("--strategy", default="tpe", help="default: %(default)s")
    parser.add_argument("--output", default="bench_medical.json",
                        help="JSON results (default: %(default)s)")


register(Benchmark("medical", "a 3-D segmentation search on a real MRI against MONAI's fixed "
                   "U-Net trained the same way and the best intensity threshold (test Dice)",
                   _bench_flags, "raynas.tasks.segmentation.bench:main"))
