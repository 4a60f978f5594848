"""``raynas data real-mri DIR``: two segmentation tasks on a real MRI, as ``nifti:`` folders.

The source is Debian's ``mricron-data`` package (main, BSD-3-clause, MRIcron by Chris Rorden;
``apt-get install mricron-data``), whose templates folder holds the Colin27 single-subject head
T1 (``ch2.nii.gz``, 181x217x181 voxels of 1 mm, RAS) and, on the same grid, its brain
(``ch2bet.nii.gz``) and the AAL atlas (``aal.nii.gz``, 116 regions named in ``aal.nii.txt``).

- ``DIR/brain``: brain extraction, the head T1 -> the brain mask (``ch2bet > 0``);
- ``DIR/aal``: AAL parcellation with left and right merged (62 classes and background).

One subject's labels are a function of position, so the split is spatial: the left hemisphere
trains and validates, the right hemisphere tests, mirrored onto the left (a network sees the
same side of the brain, never where a voxel is). Each hemisphere (90x217x181) is cut into 8
blocks of 90x108x45 voxels (2 along front-back, 4 along bottom-top); 6 left blocks train, 2
validate (``splits.json``), the 8 right ones test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from raynas.errors import ConfigError, DataError
from raynas.tasks.segmentation.data import nibabel_for

TEMPLATES = Path("/usr/share/mricron/templates")
FILES = ("ch2.nii.gz", "ch2bet.nii.gz", "aal.nii.gz", "aal.nii.txt")
MIDLINE = 90  # x index of 0 mm (the affine's origin is -90 mm): left < 90 < right
Y_CUTS, Z_CUTS, Z_BLOCK = 2, 4, 45
VAL = ((0, 2), (1, 1))  # (front-back, bottom-top) of the left blocks that validate


def aal_classes(names: Path) -> dict[int, int]:
    """AAL region value -> merged class: a region's left and right halves (``_L``/``_R``) are
    one class, the midline vermis regions one each; numbered in the file's order from 1."""
    merged: dict[str, int] = {}
    classes: dict[int, int] = {}
    for line in names.read_text().splitlines():
        if not line.strip():
            continue
        value, name = line.split()[:2]
        base = name.removesuffix("_L").removesuffix("_R")
        classes[int(value)] = merged.setdefault(base, len(merged) + 1)
    return classes


def blocks(volume: np.ndarray) -> dict[str, np.ndarray]:
    """The 16 blocks of a (181, 217, 181) volume: ``left_YZ`` and ``right_YZ`` (mirrored)."""
    halves = {"left": volume[:MIDLINE], "right": volume[MIDLINE + 1:][::-1]}
    depth = volume.shape[1] // Y_CUTS
    out = {}
    for side, half in halves.items():
        for y in range(Y_CUTS):
            for z in range(Z_CUTS):
                out[f"{side}_{y}{z}"] = np.ascontiguousarray(
                    half[:, y * depth:(y + 1) * depth, z * Z_BLOCK:(z + 1) * Z_BLOCK])
    return out


def write(folder: Path, templates: Path = TEMPLATES) -> dict[str, Path]:
    """Write DIR/brain and DIR/aal; one line naming the package when it is missing."""
    missing = [name for name in FILES if not (templates / name).is_file()]
    if missing:
        raise DataError(f"{templates / missing[0]} not found: install Debian's mricron-data "
                        "(sudo apt-get install mricron-data) or give --templates DIR")
    nib = nibabel_for("real-mri")
    head = nib.load(templates / "ch2.nii.gz")
    image = np.asanyarray(head.dataobj).astype(np.float32)
    brain = (np.asanyarray(nib.load(templates / "ch2bet.nii.gz").dataobj) > 0).astype(np.uint8)
    atlas = np.asanyarray(nib.load(templates / "aal.nii.gz").dataobj)
    lookup = np.zeros(int(atlas.max()) + 1, np.uint8)
    for value, merged in aal_classes(templates / "aal.nii.txt").items():
        lookup[value] = merged
    images = blocks(image)
    train = [f"{n}.nii.gz" for n in images if n.startswith("left") and
             (int(n[-2]), int(n[-1])) not in VAL]
    splits = {"train": train,
              "val": [f"left_{y}{z}.nii.gz" for y, z in VAL],
              "test": [f"{n}.nii.gz" for n in images if n.startswith("right")]}
    written = {}
    for task, labels in (("brain", brain), ("aal", lookup[atlas])):
        root = folder / task
        for sub in ("images", "labels"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        masks = blocks(labels)
        for name, volume in images.items():
            nib.save(nib.Nifti1Image(volume, head.affine), root / "images" / f"{name}.nii.gz")
            nib.save(nib.Nifti1Image(masks[name], head.affine), root / "labels" / f"{name}.nii.gz")
        (root / "splits.json").write_text(json.dumps(splits, indent=1))
        written[task] = root
    return written


def main(args: argparse.Namespace) -> None:
    folder = Path(args.folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder}: exists and is not an empty folder")
    written = write(folder, args.templates)
    print(f"wrote the Colin27 T1 (mricron-data, BSD-3-clause) as 16 hemisphere blocks: "
          f"brain extraction in {written['brain']} (2 classes), AAL parcellation in "
          f"{written['aal']} (63 classes); left trains, right tests. Search them with "
          f"--dataset nifti:{written['brain']}:spacing=2")
