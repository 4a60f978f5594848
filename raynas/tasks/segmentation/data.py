"""Medical volumes on disk: the ``nifti:DIR`` dataset, and demo data to try it on.

``nifti:DIR`` reads DIR/images/*.nii.gz (or .nii), each a 3-D volume (D, H, W) or a 4-D one with
channels last (D, H, W, C), all of one shape, and their targets:

- segmentation: DIR/labels/ holds a mask of the same name per image (integer classes, 0 the
  background, shaped like the image's volume);
- classification: DIR/labels.csv with columns ``image,label`` (a file name in images/, a class).

Volumes are read straight into one preallocated array, so the data are in memory once. NIfTI is
read with nibabel; the demo data are MONAI's synthetic spheres (``create_test_image_3d``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from raynas.errors import DataError

SUFFIXES = (".nii.gz", ".nii")


def _nibabel(spec: str):
    try:
        import nibabel
    except ImportError:
        raise DataError(f"{spec}: reading NIfTI needs nibabel: pip install 'raynas[medical]'"
                        ) from None
    return nibabel


def _stem(path: Path) -> str:
    return next(path.name[: -len(s)] for s in SUFFIXES if path.name.endswith(s))


def read_nifti(spec: str, folder: str) -> tuple[np.ndarray, np.ndarray, None]:
    """Images (N, C, D, H, W) float32 and masks (N, D, H, W) or labels (N,) int64."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{spec}: directory not found: {root}")
    nib = _nibabel(spec)
    folder = root / "images"
    if not folder.is_dir():
        raise DataError(f"{spec}: no folder {folder} (expected DIR/images/*.nii.gz and "
                        "DIR/labels/ or DIR/labels.csv)")
    files = sorted(p for p in folder.iterdir() if p.name.endswith(SUFFIXES))
    if not files:
        raise DataError(f"{spec}: no NIfTI images (*.nii.gz, *.nii) in {folder}")
    masks = root / "labels"
    table = root / "labels.csv"
    if masks.is_dir():
        targets = [next((masks / (_stem(f) + s) for s in SUFFIXES
                         if (masks / (_stem(f) + s)).is_file()), None) for f in files]
        missing = [f.name for f, t in zip(files, targets, strict=True) if t is None]
        if missing:
            raise DataError(f"{spec}: no mask in {masks} for image {missing[0]} "
                            f"({len(missing)} of {len(files)} images have none)")
    elif table.is_file():
        labels = _read_table(spec, table)
        missing = [f.name for f in files if f.name not in labels]
        if missing:
            raise DataError(f"{spec}: {table} has no label for image {missing[0]}")
    else:
        raise DataError(f"{spec}: neither {masks}/ (segmentation masks) nor {table} "
                        "(classification labels)")

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
                            f"{files[0].name} {first.shape[1:]} with {first.shape[0]}; resample "
                            "the volumes to one shape first")
        x[i] = v
    if not masks.is_dir():
        return x, np.asarray([labels[f.name] for f in files]), None
    y = np.empty((len(files), *first.shape[1:]), dtype=np.int64)
    for i, (image, path) in enumerate(zip(files, targets, strict=True)):
        try:
            m = np.asanyarray(nib.load(path).dataobj)
        except Exception as exc:
            raise DataError(f"{spec}: cannot read {path} as NIfTI ({exc})") from None
        if m.shape != first.shape[1:]:
            raise DataError(f"{spec}: mask {path.name} is {m.shape}, its image {image.name} "
                            f"{first.shape[1:]}; a mask must match its image voxel for voxel")
        if np.any(m != np.rint(m)) or m.min() < 0:
            raise DataError(f"{spec}: mask {path.name} holds values that are not class numbers "
                            "(integers >= 0)")
        y[i] = m
    return x, y, None


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
    nib = _nibabel(f"nifti:{root}")
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
