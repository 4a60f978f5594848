"""How a classification split is scored (raynas.estimation.problem): accuracy and ROC AUC, the
AUC one-vs-rest over the classes the split holds, as scikit-learn computes it; and the hooks a
task's problem fills in (training hyperparameters, crop, inference, picture), which the shared
training loop calls for any task."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from sklearn.metrics import roc_auc_score

from raynas.data import load_dataset
from raynas.errors import SpaceError
from raynas.estimation import load_space
from raynas.estimation.fidelity import Fidelity
from raynas.estimation.problem import CLASSIFICATION, problem_of
from raynas.estimation.task import TASKS, Task
from raynas.estimation.train import TrialSettings, retrain
from raynas.models import BUILDERS, ModelBuilder


def scores(logits: torch.Tensor, y: torch.Tensor, classes: int) -> dict[str, float]:
    return CLASSIFICATION.evaluate(lambda x: x, logits, y, classes)


def test_a_perfect_ranking_scores_auc_1_and_a_reversed_one_0():
    y = torch.tensor([0, 0, 1, 1])
    right = torch.tensor([[2.0, 0], [1, 0], [0, 1], [0, 2]])
    assert scores(right, y, 2) | {"loss": 0} == {"loss": 0, "accuracy": 1.0, "auc": 1.0}
    assert scores(-right, y, 2)["auc"] == 0.0


def test_multiclass_auc_is_the_mean_of_one_vs_rest_over_the_classes_present():
    generator = torch.Generator().manual_seed(0)
    logits, y = torch.randn(60, 4, generator=generator), torch.randint(0, 3, (60,),
                                                                      generator=generator)
    probabilities = logits.softmax(1).numpy()
    expected = sum(roc_auc_score(y.numpy() == c, probabilities[:, c]) for c in range(3)) / 3
    assert scores(logits, y, 4)["auc"] == pytest.approx(expected)  # class 3 absent: left out


def test_a_split_of_one_class_has_no_auc():
    assert "auc" not in scores(torch.randn(5, 3), torch.zeros(5, dtype=torch.long), 3)


# A task's problem that adds a training hyperparameter and fills in the loop's hooks: the core
# calls them for any task, none of them named.
CALLS: list[tuple] = []


def check_noise(space, origin):
    if any(v < 0 for v in space.values("train.noise")):
        raise SpaceError(f"{origin}: space.train.noise: must be >= 0")


def noisy(x, y, hp, generator):
    CALLS.append(("crop", hp["noise"], len(x)))
    return x + hp["noise"] * torch.randn(x.shape, generator=generator), y


def counted(model, x, hp):
    CALLS.append(("infer", len(x)))
    return model(x)


def labels_of_two(x, y, predict):
    return bytes(int(label) for label in predict(x[:2]))


TOY = dataclasses.replace(CLASSIFICATION, name="toy", train_options=("noise",),
                          check_train=check_noise, crop=noisy, infer=counted,
                          picture=labels_of_two)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(TASKS, "toy", Task("toy", "raynas.estimation.train:train_trial",
                                           "raynas.estimation.train:retrain", problem=TOY,
                                           models=("toy",)))
    monkeypatch.setitem(BUILDERS, "toy_cnn", ModelBuilder("toy_cnn", "raynas.models.macro",
                                                          task="toy"))
    CALLS.clear()


def chain(model: str, train: dict) -> dict:
    return {"name": "t", "model": model, "space": {
        "layers": {"repeat": [1, 1], "block": {"op": "conv_3x3", "channels": 4, "stride": 1,
                                               "connection": "series"}}, "train": train}}


def test_a_problem_adds_training_hyperparameters_and_checks_them(toy):
    shared = "lr, weight_decay, batch_size, optimizer"
    assert problem_of(load_space(chain("toy_cnn", {"noise": 0.5}))) is TOY
    with pytest.raises(SpaceError, match=r"^t: space\.train\.noise: must be >= 0$"):
        load_space(chain("toy_cnn", {"noise": -1.0}))
    with pytest.raises(SpaceError, match=rf"space\.train\.nois: unknown training "
                                         rf"hyperparameter; known: {shared}, noise$"):
        load_space(chain("toy_cnn", {"nois": 1.0}))
    with pytest.raises(SpaceError, match=rf"space\.train\.noise: only for toy models "
                                         rf"\(e\.g\. toy_cnn\); known: {shared}$"):
        load_space(chain("macro", {"noise": 0.5}))


def test_the_loop_crops_infers_and_draws_through_the_problem(toy):
    data = load_dataset("digits", seed=0)
    space = load_space(chain("toy_cnn", {"noise": 0.5, "batch_size": 512}))
    arch = space.sample(random.Random(0))
    done = retrain(space, arch, data, 1, TrialSettings(Fidelity(1)))
    seen = len(data.x_train) + len(data.x_val)
    crops = [call for call in CALLS if call[0] == "crop"]
    assert [n for _, _, n in crops] == [512] * (seen // 512) + [seen % 512] * bool(seen % 512)
    assert {noise for _, noise, _ in crops} == {0.5}
    inferred = [call[1] for call in CALLS if call[0] == "infer"]
    assert sum(inferred) == len(data.x_test) + 2  # the test split, then the picture's two
    assert list(done.picture) == done.model(torch.as_tensor(data.x_test[:2])).argmax(1).tolist()
    assert done.picture_name == "toy.png"
    assert done.test_accuracy == pytest.approx(
        CLASSIFICATION.evaluate(done.model, torch.as_tensor(data.x_test),
                                torch.as_tensor(data.y_test), data.num_classes)["accuracy"])


def test_classification_keeps_whole_batches_and_draws_nothing():
    x, y = torch.randn(3, 2), torch.tensor([0, 1, 0])
    assert CLASSIFICATION.crop(x, y, {}, torch.Generator()) == (x, y)
    assert torch.equal(CLASSIFICATION.infer(lambda v: 2 * v, x, {}), 2 * x)
    assert (CLASSIFICATION.train_options, CLASSIFICATION.check_train,
            CLASSIFICATION.picture) == ((), None, None)
