"""``raynas data synth-medical DIR``: demo volumes and masks as NIfTI, for ``nifti:DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from raynas.errors import ConfigError


def add(commands: Any) -> None:
    data = commands.add_parser("data", help="make demo datasets")
    verbs = data.add_subparsers(dest="data_command", required=True, parser_class=type(data))
    sm = verbs.add_parser("synth-medical", help="write synthetic 3-D volumes with sphere masks "
                                                "as NIfTI (DIR/images, DIR/labels) for "
                                                "--dataset nifti:DIR")
    sm.set_defaults(func=cmd_synth_medical)
    sm.add_argument("folder", metavar="DIR", help="a new or empty folder")
    sm.add_argument("--count", type=int, default=40, help="volumes (default: %(default)s)")
    sm.add_argument("--size", type=int, default=32,
                    help="voxels along each side (default: %(default)s)")
    sm.add_argument("--classes", type=int, default=2,
                    help="classes, background included (default: %(default)s)")
    sm.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")


def cmd_synth_medical(args: argparse.Namespace) -> None:
    from raynas.volumes import write_synthetic

    folder = Path(args.folder)
    for flag, value, low in (("count", args.count, 4), ("size", args.size, 8),
                             ("classes", args.classes, 2)):
        if value < low:
            raise ConfigError(f"--{flag}: must be >= {low}")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder}: exists and is not an empty folder")
    write_synthetic(folder, args.count, args.size, args.classes, args.seed)
    print(f"wrote {args.count} volumes of {args.size}^3 voxels with masks of {args.classes} "
          f"classes to {folder}; search them with --dataset nifti:{folder}")
