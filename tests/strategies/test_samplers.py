"""The Optuna sampler raynas exposes (its picklable NSGA-II, ``--strategy nsga2``) against
Optuna's own packaged sampler test suite, and pickled after use as Tune pickles it."""

from __future__ import annotations

import pickle

import optuna
import pytest
from optuna.testing.pytest_samplers import BasicSamplerTestCase, MultiObjectiveSamplerTestCase

from raynas.strategies.samplers import NSGAIISampler


class TestNSGAIISampler(BasicSamplerTestCase, MultiObjectiveSamplerTestCase):
    @pytest.fixture
    def sampler(self):
        return lambda: NSGAIISampler(population_size=4, seed=0)


def test_a_used_sampler_pickles_and_goes_on_where_it_was():
    def objective(trial):
        x, y = trial.suggest_float("x", 0, 1), trial.suggest_int("y", 0, 9)
        return x + y, (1 - x) + (9 - y)

    study = optuna.create_study(directions=["minimize", "minimize"],
                                sampler=NSGAIISampler(population_size=4, seed=0))
    study.optimize(objective, n_trials=12)
    copy = pickle.loads(pickle.dumps(study.sampler))
    params = []  # the copy's next proposal is the original's
    for sampler in (study.sampler, copy):
        other = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
        for t in study.trials:
            other.add_trial(t)
        trial = other.ask()
        params.append((trial.suggest_float("x", 0, 1), trial.suggest_int("y", 0, 9)))
    assert params[0] == params[1]


@pytest.mark.parametrize("space_name", ["small_cnn", "nb201_cell"])
def test_our_optuna_search_proposes_what_rays_does(space_name):
    """raynas's ``OptunaSearch`` reads the suggested values from the trial instead of through
    Ray's per-call signature wrapper: the same proposals, conditional layers included."""
    from ray.tune.search.optuna import OptunaSearch as RayOptunaSearch

    from raynas.estimation import load_space
    from raynas.strategies.samplers import OptunaSearch

    space = load_space(space_name)
    proposals = []
    for kind in (OptunaSearch, RayOptunaSearch):
        searcher = kind(space=space.optuna_define_by_run, metric="acc", mode="max",
                        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=4))
        configs = []
        for i in range(12):
            configs.append(searcher.suggest(f"t{i}"))
            searcher.on_trial_complete(f"t{i}", {"acc": len(str(configs[-1])) % 7 / 7})
        proposals.append(configs)
    assert proposals[0] == proposals[1]
    assert all(space.decode(c) for c in proposals[0])
