"""On a CUDA GPU (skipped elsewhere, saying so): a trial trains with its data on the CPU and
only batches on the card, so trials sharing one GPU do not each hold the dataset there; costs
are measured on the card; a search with a quarter GPU per trial runs end to end."""

from __future__ import annotations

import random

import pytest
import torch

from raynas.config import Resources, SearchConfig
from raynas.data import load_dataset
from raynas.estimation import load_space
from raynas.estimation.costs import CostSettings, measure
from raynas.estimation.train import Run, host
from raynas.experiment.driver import search

pytestmark = pytest.mark.gpu


def test_a_trial_holds_batches_on_the_gpu_not_the_dataset():
    data = load_dataset("mnist1d:75000")  # 60,000 sequences: ~8 MB of inputs
    space = load_space("small_cnn")
    cuda = torch.device("cuda")
    run = Run(space, space.sample(random.Random(0)), data.input_shape, data.num_classes, 1, cuda,
              0)
    x, y, x_val, y_val = host(data.x_train, data.y_train, data.x_val, data.y_val)
    assert x.is_pinned()
    torch.cuda.reset_peak_memory_stats()
    list(run.epochs(x, y, 1))
    scores = run.scores(x_val, y_val)
    assert scores["accuracy"] > 0.3  # chance is 0.1
    assert torch.cuda.max_memory_allocated() < x.nbytes / 2


def test_costs_are_measured_on_the_gpu():
    space = load_space("small_cnn")
    data = load_dataset("digits")
    costs = measure(space, space.sample(random.Random(0)), data, CostSettings(epoch_samples=1000),
                    torch.device("cuda"), 64)
    assert costs["latency_ms"] > 0 and costs["peak_memory_mb"] > 0 and costs["epoch_s"] > 0


def test_a_search_with_a_quarter_gpu_per_trial(ray_local, tracking):
    result = search(SearchConfig(num_trials=4, max_epochs=2, retrain_epochs=1, resources=Resources(
        concurrency=4, gpus_per_trial=0.25)))
    assert result.num_failed == 0 and result.best["test_accuracy"] > 0.8
