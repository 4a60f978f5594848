"""Medical data: NIfTI volumes written to disk and read back through ``nifti:DIR`` (masks or a
labels CSV), ``npz:`` volumes, normalisation from the training split, and bad input refused
by ``raynas search`` with one line and exit code 2."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from raynas.cli import main
from raynas.data import load_dataset
from raynas.estimation import load_space
from raynas.estimation.train import Run, tensors
from raynas.tasks.segmentation.data import write_synthetic


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("nifti") / "demo", count=12, size=16,
                           classes=3)


def test_nifti_masks_read_back(volumes, tmp_path):
    data = load_dataset(f"nifti:{volumes}:cache={tmp_path}", seed=0)
    assert data.masks and data.num_classes == 3 and data.split_sizes == (8, 2, 2)
    assert data.input_shape == (1, 16, 16, 16)
    first = data.dataset("train")[0]
    assert first["label"].dtype == torch.uint8 and first["image"].dtype == torch.float32
    # z-scored per volume
    assert abs(first["image"].mean()) < 1e-4 and abs(first["image"].std() - 1) < 1e-2
    name = Path(data.items["train"][0]["label"]).name
    raw = np.asanyarray(nib.load(volumes / "labels" / name).dataobj)
    assert np.array_equal(raw, first["label"][0].numpy())  # masks come back voxel for voxel
    assert "resampled 1 spacing(s) to 1x1x1 mm (the median), RAS" in data.summary()


def test_nifti_labels_csv_is_classification_and_trains(tmp_path, volumes):
    root = tmp_path / "cls"
    (root / "images").mkdir(parents=True)
    rows = []
    for i, image in enumerate(sorted((volumes / "images").iterdir())):
        (root / "images" / image.name).symlink_to(image)
        rows.append({"image": image.name, "label": "lesion" if i % 2 else "healthy"})
    with (root / "labels.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["image", "label"])
        writer.writeheader()
        writer.writerows(rows)
    data = load_dataset(f"nifti:{root}")
    assert not data.masks and data.num_classes == 2 and data.y_train.shape == (8,)
    space = load_space("medical_3d")
    arch = space.validate({"stem_channels": 8, "layers": [
        {"op": "attention_gate", "channels": 8, "stride": 2, "connection": "skip"},
        {"op": "multi_scale_fusion", "channels": 8, "stride": 1, "connection": "dense"}],
        "train": {"lr": 0.01, "batch_size": 8, "optimizer": "adam"}})
    run = Run(space, arch, data.input_shape, data.num_classes, 2, torch.device("cpu"), 0)
    x, y, xv, yv = tensors(torch.device("cpu"), data.x_train, data.y_train, data.x_val,
                           data.y_val)
    assert all(np.isfinite(loss) for loss in run.epochs(x, y, 2))
    loss, accuracy = run.evaluate(xv, yv)
    assert np.isfinite(loss) and accuracy in (0.0, 0.5, 1.0)


def test_npz_volumes_with_masks(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 6, 6, 6)).astype(np.float32)
    y = (x > 1).astype(np.int64)
    np.savez(tmp_path / "v.npz", x=x, y=y)
    np.savez(tmp_path / "c.npz", x=x[:, None].repeat(2, 1), y=y)  # (N, C, D, H, W)
    for name, channels in (("v", 1), ("c", 2)):
        data = load_dataset(f"npz:{tmp_path / name}.npz")
        assert data.masks and data.input_shape == (channels, 6, 6, 6)
        assert data.y_train.shape[1:] == (6, 6, 6)


def bad(tmp_path: Path, case: str) -> str:
    """A NIfTI (or Decathlon) folder broken the way ``case`` says."""
    root = tmp_path / case
    rng = np.random.default_rng(0)
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    if case == "empty":
        return f"nifti:{root}"
    pairs = []
    for i in range(4):
        image = rng.random((8, 8) if case == "2d" else (8, 8, 8)).astype(np.float32) + 1
        mask = np.zeros((8, 8, 6) if case == "mismatch" else image.shape, np.uint8)
        mask[2:5, 2:5] = 2 if case == "msd-classes" else 1
        # "grid": the mask's voxels are 2 mm, its image's 1 mm: resampled, it has twice the size
        mask_affine = np.diag([2.0, 2.0, 2.0, 1.0]) if case == "grid" else np.eye(4)
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / "images" / f"c{i}.nii.gz")
        nib.save(nib.Nifti1Image(mask, mask_affine), root / "labels" / f"c{i}.nii.gz")
        pairs.append({"image": f"images/c{i}.nii.gz", "label": f"labels/c{i}.nii.gz"})
    if case.startswith("msd"):
        if case == "msd-missing":
            pairs.append({"image": "images/c9.nii.gz", "label": "labels/c9.nii.gz"})
        (root / "dataset.json").write_text(json.dumps(
            {"labels": {"0": "background", "1": "tumour"}, "training": pairs}))
        return f"msd:{root}"
    return f"nifti:{root}"


@pytest.mark.parametrize(("case", "space", "message"), [
    ("empty", "unet3d_seg", r"no NIfTI images \(\*\.nii\.gz, \*\.nii\) in .*empty/images"),
    ("2d", "unet3d_seg", r"c0\.nii\.gz is 2-D \(8, 8\); images must be 3-D volumes"),
    ("mismatch", "unet3d_seg", r"mask c\d\.nii\.gz is \(8, 8, 6\) after resampling, its "
                               r"image c\d\.nii\.gz \(8, 8, 8\); a mask must match its image"),
    ("grid", "unet3d_seg", r"mask c\d\.nii\.gz is \(1[56], 1[56], 1[56]\) after resampling, its "
                           r"image c\d\.nii\.gz \(8, 8, 8\)"),
    ("msd-missing", "unet3d_seg", r"dataset\.json names images/c9\.nii\.gz, which is not there"),
    ("msd-classes", "unet3d_seg", r"mask c\d\.nii\.gz holds class 2, which dataset\.json does "
                                  r"not declare \(labels: \[0, 1\]\)"),
    ("patch", "unet3d_seg", r"train\.patch_size 16 is larger than the smallest volume after "
                            r"resampling, 8x8x8; choose patches of at most 8 or a finer spacing"),
    ("digits", "unet3d_seg", r"model 'unet3d' segments, and the dataset has one label per "
                             r"input"),
    ("digits", "medical_3d", r"op '3d_avg_pool_2x2x2' needs volumes \(C, D, H, W\), the "
                             r"dataset's inputs are \(1, 8, 8\)"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case, space, message):
    dataset = "digits" if case == "digits" else bad(tmp_path, case)
    cache = tmp_path / "cache"
    code = main(["search", "--space", space, "--dataset", f"{dataset}:cache={cache}"
                 if dataset != "digits" else dataset, "--num-trials", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("raynas: error: ")
    assert re.search(message, err), err
    if case not in ("patch", "digits"):  # refused data leave nothing in the cache
        assert not cache.exists() or not any(cache.iterdir())


def test_synth_medical_command(tmp_path, capsys):
    assert main(["data", "synth-medical", str(tmp_path / "d"), "--count", "4", "--size",
                 "8"]) == 0
    assert len(list((tmp_path / "d" / "labels").glob("*.nii.gz"))) == 4
    assert main(["data", "synth-medical", str(tmp_path / "d")]) == 2  # not empty
    assert "exists and is not an empty folder" in capsys.readouterr().err


def test_patch_training_and_sliding_window_evaluation(volumes):
    data = load_dataset(f"nifti:{volumes}")
    space = load_space({"name": "patches", "model": "unet3d", "space": {
        "levels": {"repeat": [2, 2], "block": {"op": "3d_conv_3x3x3", "channels": 4}},
        "attention": True, "fusion": "none",
        "train": {"lr": 0.01, "batch_size": 4, "optimizer": "adam", "patch_size": 8}}})
    arch = space.sample(random.Random(0))
    run = Run(space, arch, data.input_shape, data.num_classes, 1, torch.device("cpu"), 0)
    x, y, xv, yv = tensors(torch.device("cpu"), data.x_train, data.y_train, data.x_val,
                           data.y_val)
    images, masks = run.batch(x[:3], y[:3])
    assert images.shape == (3, 1, 8, 8, 8) and masks.shape == (3, 8, 8, 8)
    # each patch is a crop of its own volume and of its mask at the same place
    for image, mask, volume, full in zip(images, masks, x[:3], y[:3], strict=True):
        hits = [(d, h, w) for d in range(9) for h in range(9) for w in range(9)
                if torch.equal(volume[:, d:d + 8, h:h + 8, w:w + 8], image)]
        assert any(torch.equal(full[d:d + 8, h:h + 8, w:w + 8], mask) for d, h, w in hits)
    assert all(np.isfinite(loss) for loss in run.epochs(x, y, 1))
    assert 0 <= run.scores(xv, yv)["dice"] <= 1  # whole volumes, by sliding window
    assert run.predict(xv[:1]).shape == (1, 16, 16, 16)


def test_patch_size_is_for_segmentation_only():
    from raynas.errors import SpaceError

    with pytest.raises(SpaceError, match=r"space\.train\.patch_size: only for segmentation"):
        load_space({"name": "p", "model": "macro", "space": {
            "layers": {"repeat": [1, 1], "block": {"op": "conv_3x3", "channels": 4,
                                                   "stride": 1, "connection": "series"}},
            "train": {"patch_size": 8}}})
