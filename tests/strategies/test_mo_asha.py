"""MO-ASHA: the scheduler driven through Tune's scheduler API with real Tune ``Trial``s on a
synthetic two-objective problem whose dominated trials are known, constraints, pickling, the
refusal of bad flag combinations, and one real search whose early-stopped trials MLflow shows
as KILLED."""

from __future__ import annotations

import json
import pickle

import pytest
from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from raynas.config import Resources, SearchConfig, Tracking
from raynas.errors import ConfigError
from raynas.experiment.driver import search
from raynas.experiment.resolve import resolve
from raynas.objectives.constraints import parse_constraints
from raynas.objectives.pareto import dominates
from raynas.schedulers.mo_asha import MultiObjectiveASHA

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP
OBJECTIVES = [("val_accuracy", "max"), ("params", "min")]


def trial(name: str) -> Trial:
    return Trial("synthetic", trial_id=name, stub=True)


def report(scheduler: MultiObjectiveASHA, name: str, budget: int, accuracy: float,
           params: int) -> str:
    result = {"budget": budget, "val_accuracy": accuracy, "params": params}
    return scheduler.on_trial_result(None, trial(name), result)


def test_rungs_are_asha_budgets_below_max_t():
    assert [r.milestone for r in MultiObjectiveASHA(OBJECTIVES, 9).rungs] == [1, 3]
    assert [r.milestone for r in MultiObjectiveASHA(OBJECTIVES, 6).rungs] == [1, 3]
    assert [r.milestone for r in MultiObjectiveASHA(OBJECTIVES, 27).rungs] == [1, 3, 9]


def test_a_rung_promotes_the_top_third_by_pareto_rank_then_epsilon_net():
    scheduler = MultiObjectiveASHA(OBJECTIVES, max_t=9)
    for name in "ABCDEFGH":
        scheduler.on_trial_add(None, trial(name))
    # Each arrival at rung 1 is judged against the results recorded there so far; it goes on
    # if it is among the top ceil(n/3) of the n recorded, itself included.
    expected = [
        ("A", 0.90, 1000, CONTINUE),  # alone: n=1, keep 1
        ("B", 0.80, 2000, STOP),      # dominated by A; keep 1 of 2
        ("C", 0.95, 5000, CONTINUE),  # front {A, C}; the ε-net seeds on accuracy: C first
        ("D", 0.70, 500, CONTINUE),   # front {C, A, D}, keep 2 of 4: D is the point farthest
                                      # from C (accuracy alone would stop it: B, E beat it)
        ("E", 0.85, 3000, STOP),      # dominated by A: second front; keep 2 of 5
        ("F", 0.60, 5000, STOP),      # dominated by everyone
        ("G", 0.92, 800, CONTINUE),   # dominates A: front {C, G, D}, keep 3 of 7
        ("H", 0.91, 900, STOP),       # dominated by G only, but keep 3 of 8 = the front
    ]
    for name, accuracy, params, decision in expected:
        assert report(scheduler, name, 1, accuracy, params) == decision, name
    rung = scheduler.rungs[0]
    assert rung.order()[:3] == ["C", "D", "G"]
    assert rung.order()[3:5] == ["H", "A"]  # then H (dominated by G only), which dominates A
    assert rung.order()[-1] == "F"
    # Between rungs nothing is decided; at rung 3 the first arrival goes on, the second is
    # judged against it, and a trial judged at a rung is not judged there again.
    assert report(scheduler, "C", 2, 0.95, 5000) == CONTINUE
    assert report(scheduler, "C", 3, 0.96, 5000) == CONTINUE
    assert report(scheduler, "D", 3, 0.70, 500) == STOP  # front {C, D}, keep 1: C first
    assert report(scheduler, "C", 4, 0.10, 5000) == CONTINUE
    assert report(scheduler, "G", 9, 0.97, 800) == STOP  # max_t reached: done
    assert scheduler.num_stopped == 5  # B, E, F, H at rung 1, D at rung 3
    assert list(scheduler.rungs[1].points) == ["C", "D"]


def test_an_infeasible_trial_is_never_promoted_and_ranks_after_feasible_ones():
    constraints = parse_constraints(["params<=4000"])
    scheduler = MultiObjectiveASHA(OBJECTIVES, 9, constraints=constraints)
    # the best accuracy there is, alone at its rung - but over the parameter budget
    assert report(scheduler, "big", 1, 0.99, 5000) == STOP
    # a much worse feasible trial goes on: feasible results rank first
    assert report(scheduler, "small", 1, 0.50, 3000) == CONTINUE
    assert report(scheduler, "big2", 1, 0.98, 4001) == STOP
    assert scheduler.rungs[0].order() == ["small", "big", "big2"]
    # a trial rejected before training (budget 0, NaN accuracy) is not ranked at all
    assert report(scheduler, "rejected", 0, float("nan"), 9000) == CONTINUE
    assert report(scheduler, "nan", 1, float("nan"), 100) == CONTINUE
    assert list(scheduler.rungs[0].points) == ["big", "small", "big2"]
    # a constraint on a metric the result lacks cannot be checked: no violation
    unchecked = MultiObjectiveASHA(OBJECTIVES, 9, constraints=parse_constraints(["flops<=1"]))
    assert report(unchecked, "a", 1, 0.9, 100) == CONTINUE


def test_pickle_round_trip_keeps_the_rungs_and_the_decisions():
    scheduler = MultiObjectiveASHA(OBJECTIVES, 9, constraints=parse_constraints(["params<=1e6"]))
    for name, accuracy, params in [("A", 0.9, 1000), ("B", 0.8, 2000), ("C", 0.95, 5000)]:
        report(scheduler, name, 1, accuracy, params)
    copy = pickle.loads(pickle.dumps(scheduler))
    assert copy.rungs == scheduler.rungs and copy.num_stopped == scheduler.num_stopped
    assert copy.constraints == scheduler.constraints
    for name, accuracy, params in [("D", 0.7, 500), ("E", 0.85, 3000), ("F", 0.99, 100)]:
        assert report(copy, name, 1, accuracy, params) == \
            report(scheduler, name, 1, accuracy, params)
    assert copy.debug_string() == scheduler.debug_string()


def test_tune_config_metric_must_be_the_first_objective():
    scheduler = MultiObjectiveASHA(OBJECTIVES, 9)
    assert scheduler.set_search_properties("val_accuracy", "max")
    assert scheduler.set_search_properties(None, None)
    assert not scheduler.set_search_properties("params", "min")
    with pytest.raises(ValueError, match="two objectives"):
        MultiObjectiveASHA(OBJECTIVES[:1], 9)


def test_mo_asha_needs_several_objectives_and_a_strategy_that_takes_them():
    with pytest.raises(ConfigError, match=r"^--scheduler mo-asha: ranks trials by several "
                                          r"objectives; give two or more"):
        resolve(SearchConfig(strategy="random", scheduler="mo-asha"))
    with pytest.raises(ConfigError, match=r"^--scheduler mo-asha: needs --strategy random, "
                                          r"evolution, nsga2 .*, not .tpe.$"):
        resolve(SearchConfig(strategy="tpe", scheduler="mo-asha",
                              objective=["val_accuracy:max", "params:min"]))


def test_search_with_mo_asha_kills_dominated_trials_and_logs_a_non_dominated_front(
        ray_local, tracking):
    result = search(SearchConfig(
        space="small_cnn", strategy="evolution", scheduler="mo-asha", num_trials=6,
        max_epochs=2, retrain_epochs=1, objective=["val_accuracy:max", "params:min"],
        resources=Resources(concurrency=2), tracking=Tracking(experiment="t",
                                                              tracking_uri=tracking)))
    client = MlflowClient(tracking)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["raynas.scheduler"] == "mo-asha"
    runs = client.search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{result.parent_run_id}' and tags.`raynas.role` = 'trial'")
    assert len(runs) == 6
    steps = {r.info.run_id: [m.step for m in client.get_metric_history(r.info.run_id,
                                                                         "val_accuracy")]
             for r in runs}
    killed = [r for r in runs if r.info.status == "KILLED"]
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert killed and finished and len(killed) + len(finished) == 6
    # stopped at the first rung (budget 1 of 2), the only one below max_t
    assert all(steps[r.info.run_id] == [1] for r in killed)
    assert all(steps[r.info.run_id] == [1, 2] for r in finished)
    assert all(r.data.tags["raynas.stopped_early"] == "true" for r in killed)

    # The front logged on the parent run: trials' own points, none dominated by any trial.
    with open(client.download_artifacts(result.parent_run_id, "pareto.json")) as f:
        front = [(p["val_accuracy"], p["params"]) for p in json.load(f)["front"]]
    points = [(r.data.metrics["val_accuracy"], r.data.metrics["params"]) for r in runs]
    modes = ["max", "min"]
    assert front and set(front) <= set(points)
    assert not any(dominates(p, f, modes) for p in points for f in front)
