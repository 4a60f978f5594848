"""``raynas bench ranking``'s parts on MNIST-1D: a supernet must rank a planted strong/weak pair
the right way round, the ground truth is read back instead of retrained, and the sample covers
the sizes of the space."""

from __future__ import annotations

import pytest
import torch

from raynas.data import load_dataset
from raynas.estimation import load_space
from raynas.estimation.train import tensors
from raynas.models import build_model, from_genotype
from raynas.objectives.measure import count_params
from raynas.tabular import ranking

#: Convolutions on every edge, against cells of parameter-free pooling (the stem and the
#: residual reductions are their only weights).
STRONG = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|"
          "nor_conv_3x3~2|")
WEAK = "|avg_pool_3x3~0|+|none~0|avg_pool_3x3~1|+|none~0|none~1|avg_pool_3x3~2|"


@pytest.fixture(scope="module")
def mnist1d():
    """The data as tensors, on one thread (tiny convolutions run fastest so, as trials do)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data = load_dataset(ranking.DATASET, seed=0)
    yield data, tensors(torch.device("cpu"), data.x_train, data.y_train, data.x_val,
                        data.y_val, data.x_test, data.y_test)
    torch.set_num_threads(threads)


def test_a_supernet_ranks_a_planted_strong_weak_pair_the_right_way_round(mnist1d):
    data, arrays = mnist1d
    space = load_space(ranking.SPACE)
    pair = [from_genotype(space, STRONG), from_genotype(space, WEAK)]
    (strong, weak), _ = ranking.supernet(space, pair, data, arrays, "spos", 5, seed=0)
    assert strong > weak + 0.02


def test_the_ground_truth_is_trained_once_then_read(mnist1d, tmp_path, monkeypatch):
    data, arrays = mnist1d
    monkeypatch.setenv("RAYNAS_CACHE", str(tmp_path))
    space = load_space(ranking.SPACE)
    pair = [from_genotype(space, STRONG), from_genotype(space, WEAK)]

    def truth(epochs: int):
        return ranking.ground_truth(space, pair, data, arrays, 1, epochs, 0, lambda line: None)

    first, trained = truth(1)
    assert trained == 2 and (tmp_path / "ranking" / "nb201_mnist1d.json").is_file()
    again, trained = truth(1)
    assert trained == 0 and again == first
    _, trained = truth(2)  # another training setting: trained anew
    assert trained == 2


def test_the_sample_is_stratified_by_size():
    space = load_space(ranking.SPACE)
    sample = ranking.stratified(space, 6, (1, 40), 10, seed=0)
    sizes = [count_params(build_model(space, a, (1, 40), 10)) for a in sample]
    assert sizes == sorted(sizes) and len(set(sizes)) >= 5
