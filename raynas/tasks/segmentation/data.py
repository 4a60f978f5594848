"""Medical volumes with a class each (``nifti:DIR`` with DIR/labels.csv: columns ``image,label``),
and demo data to try segmentation on. Volumes with masks are ``volumes``' (streamed, resampled).

NIfTI is read with nibabel; the demo data are MONAI's synthetic spheres
(``create_test_image_3d``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from raynas.errors import DataError

SUFFIXES = (".nii.gz", ".nii")


def nibabel_for(spec: str):
    """nibabel, or a one-line DataError saying how to install it."""
    try:
        import nibabel
    except ImportError:
        raise DataError(f"{spec}: reading NIfTI needs nibabel: pip install 'raynas[medical]'"
                        ) from None
    return nibabel


def read_labelled(spec: str, root: Path) -> tuple[np.ndarray, np.ndarray, None]:
    """Volumes with a class each (DIR/images, DIR/labels.csv): images (N, C, D, H, W) float32,
    all of one shape, and their labels. (Masks are ``raynas.tasks.segmentation.volumes``'.)"""
    nib = nibabel_for(spec)
    folder = root / "images"
    files = sorted(p for p in folder.iterdir() if p.name.endswith(SUFFIXES))
    if not files:
        raise DataError(f"{spec}: no NIfTI images (*.nii.gz, *.nii) in {folder}")
    table = root / "labels.csv"
    labels = _read_table(spec, table)
    missing = [f.name for f in files if f.name not in labels]
    if missing:
        raise DataError(f"{spec}: {table} has no label for image {missing[0]}")

    def volume(path: Path) -> np.ndarray:
        try:
            data = np.asanyarray(nib.load(path).dataobj)
        except Exception as exc:  # nibabel's ImageFileError, gzip and OS errors alike
            raise DataError(f"{spec}: cannot read {path} as NIfTI ({exc})") from None
        if data.ndim == 4:
            return np.moveaxis(data, -1, 0)
        if data.ndim != 3:
            raise DataError(f"{spec}: {path.name} is {data.ndim}-D {data.shape}; images must be "
                            "3-D volumes (D, H, W) or 4-D with channels last (D, H, W, C)")
        return data[None]

    first = volume(files[0])
    x = np.empty((len(files), *first.shape), dtype=np.float32)
    for i, path in enumerate(files):
        v = first if i == 0 else volume(path)
        if v.shape != first.shape:
            raise DataError(f"{spec}: {path.name} is {v.shape[1:]} with {v.shape[0]} channels, "
                            f"{files[0].name} {first.shape[1:]} with {first.shape[0]}; a class "
                            "per volume needs volumes of one shape")
        x[i] = v
    return x, np.asarray([labels[f.name] for f in files]), None


def _read_table(spec: str, table: Path) -> dict[str, str]:
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"image", "label"} <= set(rows[0]):
        raise DataError(f"{spec}: {table} needs a header 'image,label' and one row per image")
    return {row["image"]: row["label"] for row in rows}


def write_synthetic(root: Path, count: int = 40, size: int = 32, classes: int = 2,
                    seed: int = 0) -> Path:
    """``count`` noisy volumes of ``size``^3 voxels with random spheres, and their masks
    (``classes`` - 1 kinds of sphere plus background), as NIfTI in root/images and root/labels:
    demo data for ``nifti:ROOT``. MONAI's ``create_test_image_3d`` draws them."""
    nib = nibabel_for(f"nifti:{root}")
    try:
        from monai.data.synthetic import create_test_image_3d
    except ImportError:
        raise DataError("the synthetic volumes need MONAI: pip install 'raynas[medical]'"
                        ) from None

    rng = np.random.RandomState(seed)
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, mask = create_test_image_3d(size, size, size, num_objs=4, rad_max=max(3, size // 5),
                                           rad_min=max(2, size // 10), noise_max=0.6,
                                           num_seg_classes=classes - 1, random_state=rng)
        affine = np.eye(4)
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine),
                 root / "images" / f"case{i:03d}.nii.gz")
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine),
                 root / "labels" / f"case{i:03d}.nii.gz")
    return root
