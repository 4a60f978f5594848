"""`raynas extend`: a finished search given more trials goes on exactly as if it had never
stopped - the same proposals, the same strategy state, one MLflow parent run."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from raynas.cli import main
from raynas.config import Resources, SearchConfig, Tracking
from raynas.experiment.driver import extend, search


def quiet(message: str) -> None:
    pass


def trials_in_order(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], "tags.`raynas.role` = 'trial'",
                              order_by=["attributes.start_time ASC"], max_results=100)


def searcher_state(tune_path: str) -> dict:
    """The strategy's own state as Tune saved it at the end of a (part of a) search."""
    newest = max(Path(tune_path).glob("searcher-state-*.pkl"))
    return pickle.loads(newest.read_bytes())


def comparable(strategy: str, state: dict):
    """What the strategy has learnt, without the trial ids (Tune makes new ones per run)."""
    if strategy == "evolution":
        return list(state["population"]), state["rng"].getstate(), state["num_proposed"]
    study = state["_ot_study"]  # tpe: Optuna's study, the TPE history
    return [(t.params, t.values, t.state) for t in study.trials]


@pytest.mark.parametrize(("strategy", "n"), [("evolution", 6), ("tpe", 3)])
def test_an_extended_search_equals_one_that_never_stopped(ray_local, tracking, tmp_path,
                                                          strategy, n):
    common = SearchConfig(space="small_cnn", strategy=strategy, scheduler="fifo", max_epochs=1,
                          retrain_epochs=1, seed=3, resources=Resources(concurrency=1),
                          tracking=Tracking(storage=str(tmp_path / "results")))
    first = search(common.replace(num_trials=n, experiment="parts"), quiet)
    extended = extend(first.folder, n, progress=quiet)
    whole = search(common.replace(num_trials=2 * n, experiment="whole"), quiet)

    # One search: the same folder and parent run, 2n trials, the best never worse.
    assert (extended.folder, extended.parent_run_id) == (first.folder, first.parent_run_id)
    assert extended.num_trials == 2 * n
    assert extended.best["val_accuracy"] >= first.best["val_accuracy"]
    client = MlflowClient(tracking)
    parent = client.get_run(first.parent_run_id)
    assert parent.info.status == "FINISHED"
    best = [m.value for m in sorted(client.get_metric_history(first.parent_run_id,
                                                               "best_val_accuracy"),
                                    key=lambda m: m.step)]
    assert len(best) == 2 and best == sorted(best)

    # ... and the same as the uninterrupted 2n-trial search, proposal by proposal.
    parts, once = trials_in_order(tracking, "parts"), trials_in_order(tracking, "whole")
    assert [r.data.tags["mlflow.parentRunId"] for r in parts] == [first.parent_run_id] * 2 * n
    assert ([r.data.tags["raynas.arch_hash"] for r in parts]
            == [r.data.tags["raynas.arch_hash"] for r in once])
    assert ([r.data.metrics["val_accuracy"] for r in parts]
            == [r.data.metrics["val_accuracy"] for r in once])
    assert ({k: v for k, v in extended.best.items() if k != "trial_id"}
            == {k: v for k, v in whole.best.items() if k != "trial_id"})
    ext_path = f"{first.folder}-ext1"
    assert (comparable(strategy, searcher_state(ext_path))
            == comparable(strategy, searcher_state(whole.folder)))


def test_extend_refuses_what_it_cannot_continue(ray_local, tracking, tmp_path, capsys):
    grid = search(SearchConfig(space="small_cnn", strategy="grid", scheduler="fifo",
                               num_trials=2, max_epochs=1, retrain_epochs=1,
                               tracking=Tracking(storage=str(tmp_path / "results"),
                                                 experiment="g")), quiet)
    assert main(["extend", grid.folder, "--num-trials", "2"]) == 2
    assert "a grid search has no strategy state" in capsys.readouterr().err
    assert main(["extend", "no-such-experiment", "--num-trials", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raynas: error: no-such-experiment: neither a search folder")
    assert len(err.strip().splitlines()) == 1
