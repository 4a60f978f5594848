"""A search folder's ``raynas.json``: the settings written in their groups and read back, and the
flat form written before the groups (and the strategy options) read too."""

from __future__ import annotations

import json
from dataclasses import asdict, fields

from raynas.config import GROUPS, Costs, Failures, Resources, SearchConfig, Tracking
from raynas.experiment.state import SearchState

#: Every setting away from its default, so that a setting lost or swapped on the way shows.
ALL = SearchConfig(
    space="small_cnn", dataset="mnist5k", strategy="zero_cost",
    strategy_options={"proxy": "snip", "top_k": "2"}, scheduler="fifo", num_trials=2,
    max_epochs=3, fidelity="data", proxy_task="width=0.5", objective=["val_accuracy:max"],
    constraint=["params<=1000"], scalarize="weighted", weights="1", retrain_epochs=4, seed=5,
    time_budget="20m",
    resources=Resources(concurrency=3, cpus_per_trial=0.5, gpus_per_trial=0.25, address="auto"),
    tracking=Tracking(experiment="e", tracking_uri="sqlite:///m.db", storage="/tmp/r",
                      tracking_wait=5.0, resume="auto"),
    failures=Failures(max_retries=0, max_failed_trials=3),
    costs=Costs(latency_batch=8, latency_device="cpu"))


def test_the_settings_go_flat_and_nested_and_come_back_the_same():
    settings = [f.name for kind in (SearchConfig, *GROUPS.values()) for f in fields(kind)
                if f.name not in GROUPS]
    assert sorted(ALL.flat()) == sorted(settings)  # no name is in two groups
    assert SearchConfig.of(ALL.flat()) == ALL
    assert SearchConfig.of(json.loads(json.dumps(asdict(ALL)))) == ALL
    assert ALL.replace(concurrency=1, seed=1) == SearchConfig.of(
        {**ALL.flat(), "concurrency": 1, "seed": 1})


def test_a_search_folder_keeps_its_settings_in_groups(tmp_path):
    SearchState(str(tmp_path), "sqlite:///m.db", "1", config=asdict(ALL)).save()
    saved = json.loads((tmp_path / "raynas.json").read_text())["config"]
    assert saved["resources"]["concurrency"] == 3 and "concurrency" not in saved
    state = SearchState.read(str(tmp_path))
    assert state.search_config() == ALL
    resumed = state.settings(SearchConfig(resources=Resources(address="ray://head:10001")))
    assert resumed == ALL.replace(resume=str(tmp_path), address="ray://head:10001")


def test_a_folder_written_before_the_groups_is_read_with_its_options(tmp_path):
    """raynas.json as searches wrote it before: flat, with zero_cost's and oneshot's flags
    among the settings (every search saved them, whatever its strategy)."""
    old = {**{k: v for k, v in ALL.flat().items() if k != "strategy_options"},
           "proxy": "snip", "zc_candidates": 24, "zc_top_k": 2, "supernet": "spos",
           "oneshot_searcher": "evolution"}
    for strategy, options in (("zero_cost", {"proxy": "snip", "candidates": "24",
                                             "top_k": "2"}),
                              ("oneshot", {"supernet": "spos", "searcher": "evolution"}),
                              ("tpe", None)):
        (tmp_path / "raynas.json").write_text(json.dumps({
            "folder": str(tmp_path), "tracking_uri": "sqlite:///m.db", "experiment_id": "1",
            "config": {**old, "strategy": strategy}}))
        config = SearchState.read(str(tmp_path)).search_config()
        assert config == ALL.replace(strategy=strategy, strategy_options=options)
