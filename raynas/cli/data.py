"""``raynas data kinds``: every kind of dataset spec, from the source registry;
``raynas data synth-medical DIR``: demo volumes and masks as NIfTI, for ``nifti:DIR``;
``raynas data synth-detection DIR``: demo images with boxes in COCO format, for ``coco:DIR``;
and every verb an application registers (``raynas.data.commands.DATA_COMMANDS``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from raynas.data.commands import DATA_COMMANDS
from raynas.errors import ConfigError
from raynas.registry import load_ref


def add(commands: Any) -> None:
    data = commands.add_parser("data", help="the kinds of dataset; make demo datasets")
    verbs = data.add_subparsers(dest="data_command", required=True, parser_class=type(data))
    kinds = verbs.add_parser("kinds", help="every kind of --dataset spec, the applications' "
                                           "included (a Markdown table)")
    kinds.set_defaults(func=cmd_kinds)
    sm = _synth(verbs, "synth-medical", cmd_synth_medical, 40, 32, "volumes", "voxels",
                "write synthetic 3-D volumes with sphere masks as NIfTI (DIR/images, "
                "DIR/labels) for --dataset nifti:DIR")
    sm.add_argument("--classes", type=int, default=2,
                    help="classes, background included (default: %(default)s)")
    sd = _synth(verbs, "synth-detection", cmd_synth_detection, 300, 64, "images", "pixels",
                "write synthetic images of shapes (square, circle, triangle) with their boxes "
                "in COCO format (DIR/annotations.json, DIR/images) for coco:DIR")
    sd.add_argument("--layout", choices=("single", "instances"), default="single",
                    help="single: DIR/annotations.json and DIR/images/; instances: COCO's "
                         "DIR/annotations/instances_train.json and DIR/train/, with the last "
                         "15%% of the images in instances_val.json and DIR/val/, which coco:DIR "
                         "reads as the test split (default: %(default)s)")
    for command in DATA_COMMANDS.values():
        parser = verbs.add_parser(command.name, help=command.help)
        command.arguments(parser)
        parser.set_defaults(func=lambda args, run=command.run: load_ref(run)(args))


def _synth(verbs: Any, name: str, func: Any, count: int, size: int, items: str, units: str,
           text: str) -> Any:
    """A ``raynas data synth-*`` command: a new folder, how many items, their size, a seed."""
    parser = verbs.add_parser(name, help=text)
    parser.set_defaults(func=func)
    parser.add_argument("folder", metavar="DIR", help="a new or empty folder")
    parser.add_argument("--count", type=int, default=count,
                        help=f"{items} (default: %(default)s)")
    parser.add_argument("--size", type=int, default=size,
                        help=f"{units} along each side (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    return parser

def _check(folder: Path, *minimums: tuple[str, int, int]) -> None:
    """ConfigError unless every (flag, value, lowest) is at least its lowest and ``folder`` is
    new or empty."""
    for flag, value, low in minimums:
        if value < low:
            raise ConfigError(f"--{flag}: must be >= {low}")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder}: exists and is not an empty folder")


def cmd_kinds(args: argparse.Namespace) -> None:
    from raynas.data import kinds_table

    print(kinds_table())


def cmd_synth_medical(args: argparse.Namespace) -> None:
    from raynas.tasks.segmentation.data import write_synthetic

    folder = Path(args.folder)
    _check(folder, ("count", args.count, 4), ("size", args.size, 8),
           ("classes", args.classes, 2))
    write_synthetic(folder, args.count, args.size, args.classes, args.seed)
    print(f"wrote {args.count} volumes of {args.size}^3 voxels with masks of {args.classes} "
          f"classes to {folder}; search them with --dataset nifti:{folder}")


def cmd_synth_detection(args: argparse.Namespace) -> None:
    from raynas.tasks.detection.data import SHAPES, write_synthetic

    folder = Path(args.folder)
    _check(folder, ("count", args.count, 10), ("size", args.size, 16))
    write_synthetic(folder, args.count, args.size, args.seed, args.layout)
    print(f"wrote {args.count} images of {args.size}x{args.size} pixels with boxes of "
          f"{len(SHAPES)} classes ({', '.join(SHAPES)}) to {folder} ({args.layout} layout); "
          f"read them as coco:{folder}")
