"""Volumes as users have them: different shapes, spacings and orientations resampled to one grid,
the Decathlon layout, streaming within a memory cap, and the real MRI of mricron-data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from raynas.cli import main
from raynas.data import load_dataset
from raynas.estimation import load_space
from raynas.tasks.segmentation.baselines import best_threshold, threshold_scores
from raynas.tasks.segmentation.realmri import TEMPLATES, aal_classes
from raynas.tasks.segmentation.train import Segmenter


def ball(shape: tuple[int, int, int], spacing: tuple[float, float, float], rng) -> tuple:
    """A bright ball of radius 6 mm in noise, on a grid of ``shape`` voxels of ``spacing`` mm,
    and its mask."""
    axes = [(np.arange(n) - n / 2) * s for n, s in zip(shape, spacing, strict=True)]
    d, h, w = np.meshgrid(*axes, indexing="ij")
    mask = (d**2 + h**2 + w**2 <= 36).astype(np.uint8)
    image = (mask * 2.0 + rng.normal(0, 0.5, shape) + 5).astype(np.float32)
    return image, mask


def write_mixed(root: Path, count: int = 9) -> Path:
    """``count`` volumes in three shapes and spacings (1, 1.5 and 2 mm voxels over about 24 mm)
    and two orientations (RAS, and LPS with the data flipped to match)."""
    rng = np.random.default_rng(0)
    grids = [((24, 24, 24), (1.0, 1.0, 1.0)), ((16, 18, 16), (1.5, 1.5, 1.5)),
             ((12, 12, 14), (2.0, 2.0, 2.0))]
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        shape, spacing = grids[i % 3]
        image, mask = ball(shape, spacing, rng)
        affine = np.diag([*spacing, 1.0])
        if i % 2:  # LPS: the first two axes run the other way
            affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
            image, mask = image[::-1, ::-1].copy(), mask[::-1, ::-1].copy()
        nib.save(nib.Nifti1Image(image, affine), root / "images" / f"v{i}.nii.gz")
        nib.save(nib.Nifti1Image(mask, affine), root / "labels" / f"v{i}.nii.gz")
    return root


def test_volumes_of_three_shapes_and_spacings_are_resampled_and_train(tmp_path):
    root = write_mixed(tmp_path / "mixed")
    data = load_dataset(f"nifti:{root}")
    # the median spacing of 1, 1.5 and 2 mm; every volume spans about 24 mm, so about 16 voxels
    assert data.spacing == (1.5, 1.5, 1.5)
    every = [s for shapes in data.shapes.values() for s in shapes]
    assert all(15 <= n <= 18 for shape in every for n in shape), every
    assert "resampled 3 spacing(s) to 1.5x1.5x1.5 mm (the median), RAS" in data.summary()
    # orientation: the ball sits in the middle of every volume whichever way it was stored
    for split in ("train", "val", "test"):
        for volume in data.dataset(split):
            mask = volume["label"][0].numpy()
            centre = np.argwhere(mask).mean(0)
            assert np.allclose(centre, (np.array(mask.shape) - 1) / 2, atol=1.5)
    space = load_space({"name": "p", "model": "unet3d", "space": {
        "levels": {"repeat": [2, 2], "block": {"op": "3d_conv_3x3x3", "channels": 8}},
        "attention": False, "fusion": "none",
        "train": {"lr": 0.01, "batch_size": 8, "optimizer": "adam", "patch_size": 12}}})
    arch = space.validate({"levels": [{"op": "3d_conv_3x3x3", "channels": 8}] * 2,
                           "attention": False, "fusion": "none",
                           "train": {"lr": 0.01, "batch_size": 8, "optimizer": "adam",
                                     "patch_size": 12}})
    run = Segmenter.of(space, arch, data, 8, torch.device("cpu"), 0)
    before = run.scores("val")["dice"]
    losses = list(run.epochs(("train",), 8))
    after = run.scores("val")
    assert losses[-1] < losses[0] and after["dice"] > max(before, 0.5), (before, after)


def test_decathlon_folder_is_read_with_its_declared_classes(tmp_path):
    mixed = write_mixed(tmp_path / "mixed", count=6)
    root = tmp_path / "Task01"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    pairs = []
    for image in sorted((mixed / "images").iterdir()):
        (root / "imagesTr" / image.name).symlink_to(image)
        (root / "labelsTr" / image.name).symlink_to(mixed / "labels" / image.name)
        pairs.append({"image": f"./imagesTr/{image.name}", "label": f"./labelsTr/{image.name}"})
    (root / "dataset.json").write_text(json.dumps({
        "labels": {"0": "background", "1": "ball", "2": "never drawn"}, "training": pairs,
        "test": ["./imagesTs/x.nii.gz"]}))
    data = load_dataset(f"msd:{root}:spacing=2")
    assert data.num_classes == 3 and data.spacing == (2.0, 2.0, 2.0)  # declared, not seen
    assert sum(data.split_sizes) == 6 and "(given)" in data.summary()


MEMORY = textwrap.dedent("""
    import resource, sys, torch
    torch.set_num_threads(1)
    from raynas.data import load_dataset
    from raynas.estimation import load_space
    from raynas.tasks.segmentation.train import Segmenter, evaluate
    data = load_dataset(sys.argv[1])
    space = load_space({"name": "p", "model": "unet3d", "space": {
        "levels": {"repeat": [2, 2], "block": {"op": "3d_conv_3x3x3", "channels": 4}},
        "attention": False, "fusion": "none",
        "train": {"lr": 0.01, "batch_size": 4, "optimizer": "adam", "patch_size": 16}}})
    arch = space.sample(__import__("random").Random(0))
    run = Segmenter.of(space, arch, data, 2, torch.device("cpu"), 0)
    # Warm up on two volumes: the libraries' lazy imports and buffers, one volume's peak.
    list(run.epochs(("train",), 1, fraction=0.01))
    evaluate(run.infer, [data.dataset("test")[0]], data.num_classes)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    list(run.epochs(("train", "val"), 2))
    run.scores("test")
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
""")


@pytest.mark.e2e
def test_a_folder_larger_than_the_cap_streams_within_it(tmp_path):
    """40 volumes of 64³ voxels: 40 MB of float32 images. After a warm-up on two of them, an
    epoch over train+val and the test scores raise the peak RSS by less than a third of that:
    the loop holds a batch and one volume, never a split."""
    root = tmp_path / "big"
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    affine = np.diag([0.4, 0.4, 0.4, 1])
    for i in range(40):
        image, mask = ball((64, 64, 64), (0.4, 0.4, 0.4), rng)
        nib.save(nib.Nifti1Image(image, affine), root / "images" / f"b{i}.nii.gz")
        nib.save(nib.Nifti1Image(mask, affine), root / "labels" / f"b{i}.nii.gz")
    cap = 40 * 64**3 * 4 // 3
    spec = f"nifti:{root}:cache={tmp_path / 'cache'}"
    load_dataset(spec)  # preprocessed into the cache once, one volume at a time
    out = subprocess.run([sys.executable, "-c", MEMORY, spec], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    grown = int(out.stdout.split()[-1])
    assert grown < cap, f"peak RSS grew {grown / 2**20:.1f} MB, cap {cap / 2**20:.0f} MB"


@pytest.mark.skipif(not TEMPLATES.is_dir(), reason="needs Debian's mricron-data (.ci/run)")
def test_real_mri_command_writes_both_tasks(tmp_path, capsys):
    assert main(["data", "real-mri", str(tmp_path / "mri")]) == 0
    classes = aal_classes(TEMPLATES / "aal.nii.txt")
    assert len(classes) == 116 and len(set(classes.values())) == 62
    assert classes[1] == classes[2]  # Precentral_L and Precentral_R: one class
    for task, count in (("brain", 2), ("aal", 63)):
        root = tmp_path / "mri" / task
        splits = json.loads((root / "splits.json").read_text())
        assert [len(splits[s]) for s in ("train", "val", "test")] == [6, 2, 8]
        assert all(name.startswith("right") for name in splits["test"])
        masks = [np.asanyarray(nib.load(p).dataobj) for p in sorted((root / "labels").iterdir())]
        assert max(int(m.max()) for m in masks) + 1 == count
        assert masks[0].shape == (90, 108, 45)
    assert main(["data", "real-mri", str(tmp_path / "mri")]) == 2  # not empty
    assert main(["data", "real-mri", str(tmp_path / "x"), "--templates", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.endswith("install Debian's mricron-data (sudo apt-get install mricron-data) or "
                        "give --templates DIR")


def test_threshold_baseline_finds_the_bright_ball_and_scores_like_a_network(tmp_path):
    data = load_dataset(f"nifti:{write_mixed(tmp_path / 'mixed')}")
    cut, brighter, target = best_threshold(data)
    assert brighter and target == 1
    scores = threshold_scores(data)
    # the ball is 2 standard deviations of noise brighter: a cut between finds most of it
    assert scores["dice"] > 0.8 and scores["dice"] == scores["dice_class_1"]
