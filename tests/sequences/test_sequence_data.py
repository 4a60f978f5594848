"""``ucr:NAME`` on the sets bundled in the aeon wheel (real files), ``ucr:DIR/NAME``, bad input
as one line, the split that small data always gets, and the 1-NN baseline."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from raynas.data import load_dataset
from raynas.data.arrays import split
from raynas.errors import DataError
from raynas.tasks.sequences import ucr
from raynas.tasks.sequences.baselines import one_nn_accuracy


def test_bundled_sets_keep_the_official_split():
    data = load_dataset("ucr:GunPoint")
    assert data.input_shape == (1, 150) and data.num_classes == 2
    assert len(data.x_train) + len(data.x_val) == 50 and len(data.x_test) == 150
    assert not data.note  # 15% of 50 holds both classes
    assert abs(np.nanmean(data.x_train)) < 1e-5  # normalised on the training split


def test_multivariate_and_variable_length():
    data = load_dataset("ucr:BasicMotions")
    assert data.input_shape == (6, 100) and data.num_classes == 4
    vowels = load_dataset("ucr:JapaneseVowels")
    assert vowels.input_shape == (12, 29) and vowels.num_classes == 9
    lengths = (~np.isnan(vowels.x_test).all(1)).sum(1)
    assert lengths.min() == 7 and lengths.max() == 29  # the archive's 7 to 29 steps
    real = ~np.isnan(vowels.x_train)
    assert (real.all(1) | ~real.any(1)).all()  # a step is padding in every channel or none
    assert not np.isnan(vowels.x_train[:, :, 0]).any()  # padding only at the end
    assert (np.diff(real[:, 0].astype(int), axis=1) <= 0).all()


def test_fifty_series_in_ten_classes_get_a_validation_split():
    """The issue's example: 50 training series of 10 classes were refused ('cannot split')."""
    data = load_dataset("ucr:PickupGestureWiimoteZ")
    assert len(data.x_val) == 10 and sorted(data.y_val) == list(range(10))
    assert len(data.x_train) == 40 and len(data.x_test) == 50
    assert data.note == ("validation: one input per class, 10 of 50; 9 would be fewer than the "
                         "10 classes")
    assert data.note in data.summary()


def test_a_class_of_one_input_is_split_at_random_and_said():
    x, y = np.random.default_rng(0).normal(size=(12, 1, 5)), np.array([0] * 6 + [1] * 5 + [2])
    data = split("npz:x", (x, y, None), seed=0)
    assert sum(data.split_sizes) == 12 and len(data.x_val) >= 1
    assert data.note.startswith("test: 2 of 12 inputs at random, not stratified (a class has 1 "
                                "input)")
    default = split("npz:x", (np.zeros((40, 1, 3)), np.arange(40) % 2, None), seed=0)
    assert default.split_sizes == (28, 6, 6) and not default.note  # unchanged where it could


def test_an_archive_on_disk(tmp_path):
    folder = tmp_path / "archive" / "GunPoint"
    shutil.copytree(ucr.bundled_root("x") / "GunPoint", folder)
    data = load_dataset(f"ucr:{tmp_path / 'archive'}/GunPoint")
    assert data.input_shape == (1, 150) and len(data.x_test) == 150


def write(path, body: str, header: str = "@classLabel true a b") -> None:
    path.write_text(f"@problemName X\n{header}\n@data\n{body}")


@pytest.mark.parametrize("name, train, test, message", [
    ("Unseen", "1,2,3:a\n2,3,4:b\n", "1,2,3:a\n1,2,3:c\n",
     r"the test file has labels the training file never has: c$"),
    ("Words", "1,x,3:a\n", "1,2,3:a\n", r"Words_TRAIN.ts:4: not a number"),
    ("Empty", "", "1:a\n", r"Empty_TRAIN.ts: no series after @data$"),
])
def test_bad_files_are_one_line(tmp_path, name, train, test, message):
    write(tmp_path / f"{name}_TRAIN.ts", train)
    write(tmp_path / f"{name}_TEST.ts", test)
    with pytest.raises(DataError, match=message) as info:
        load_dataset(f"ucr:{tmp_path}/{name}")
    assert "\n" not in str(info.value)


def test_ragged_series_that_claim_equal_length(tmp_path):
    for part in ("TRAIN", "TEST"):
        write(tmp_path / f"R_{part}.ts", "1,2,3:a\n1,2:b\n1,2,3:a\n1,2,3:b\n",
              "@equalLength true\n@classLabel true a b")
    with pytest.raises(DataError, match=r"says @equalLength true, but its series have lengths "
                                        r"2 to 3$"):
        load_dataset(f"ucr:{tmp_path}/R")


def test_unknown_set_names_the_closest_and_the_sets_found():
    with pytest.raises(DataError, match=r"no classification set 'GunPont' in aeon's bundled "
                                        r"sets .*\(did you mean 'GunPoint'\?\); found: ACSF1, "):
        load_dataset("ucr:GunPont")


def test_a_regression_set_is_not_offered():
    assert "Covid3Month" not in ucr.sets(ucr.bundled_root("x"))


def test_missing_aeon_says_how_to_install(monkeypatch):
    monkeypatch.setattr(ucr.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"^ucr:GunPoint: the UCR/UEA sets ship inside aeon, "
                                        r"which is not installed: pip install --no-deps "
                                        r"'aeon==1.6.\*'$"):
        load_dataset("ucr:GunPoint")


def test_one_nn_is_the_archives_published_baseline():
    """Dau et al. 2019 list 1-NN Euclidean test error 0.087 on GunPoint and 0.045 on
    ItalyPowerDemand with the official split (here trained on train+val, i.e. the same set)."""
    assert one_nn_accuracy(load_dataset("ucr:GunPoint")) == pytest.approx(0.913, abs=0.001)
    assert one_nn_accuracy(load_dataset("ucr:ItalyPowerDemand")) == pytest.approx(0.955,
                                                                                 abs=0.001)


def test_a_search_breaks_ties_in_accuracy_by_validation_loss():
    """Ten validation series give accuracies in tenths: trials tie, their losses do not."""
    from raynas.experiment.driver import _rank

    trials = [{"val_accuracy": 0.9, "val_loss": 0.40}, {"val_accuracy": 0.9, "val_loss": 0.25},
              {"val_accuracy": 0.8, "val_loss": 0.10}, {"val_accuracy": 0.9}]
    assert max(trials, key=lambda m: _rank(m, "val_accuracy", "max")) is trials[1]
    assert min(trials[:3], key=lambda m: _rank(m, "val_loss", "min")) is trials[2]


def test_mnist1d_is_the_papers_split_generated_offline_and_cached(tmp_path, monkeypatch):
    """MNIST-1D's standard 4,000/1,000 split, made by its generator (no download), cached,
    without moving the caller's random streams; ``mnist1d:SAMPLES`` scales it."""
    monkeypatch.setenv("RAYNAS_CACHE", str(tmp_path))
    np.random.seed(7)
    expected = np.random.rand()
    np.random.seed(7)
    data = load_dataset("mnist1d")
    assert np.random.rand() == expected
    assert data.input_shape == (1, 40) and data.num_classes == 10
    assert len(data.x_train) + len(data.x_val) == 4000 and len(data.x_test) == 1000
    assert [p.name for p in tmp_path.iterdir()] == ["mnist1d-5000-seed42.npz"]
    again = load_dataset("mnist1d")  # from the cache: the same arrays
    assert np.array_equal(again.x_test, data.x_test)
    small = load_dataset("mnist1d:500")
    assert len(small.x_train) + len(small.x_val) == 400 and len(small.x_test) == 100
    for bad, message in (("mnist1d:many", "whole number"), ("mnist1d:50", "at least 100")):
        with pytest.raises(DataError, match=message):
            load_dataset(bad)
