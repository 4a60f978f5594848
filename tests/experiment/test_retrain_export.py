"""`raynas retrain` and `raynas export` on one real tiny search: real Ray tasks, real training on
digits, a real MLflow store; exports loaded back in TorchScript and onnxruntime."""

from __future__ import annotations

import json
import statistics
from types import SimpleNamespace

import mlflow
import numpy as np
import onnxruntime
import pytest
import torch
from mlflow.tracking import MlflowClient

from raynas.cli import main
from raynas.config import SearchConfig, Tracking
from raynas.data import load_dataset
from raynas.experiment.driver import search
from raynas.experiment.export import export_model
from raynas.experiment.retrain import CHAMPION, retrain_best


@pytest.fixture(scope="module")
def done(ray_local, tmp_path_factory):
    """A 3-trial grid search on small_cnn, then its top 2 architectures retrained with 2 seeds."""
    folder = tmp_path_factory.mktemp("retrain")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # MLflow's artifacts go to ./mlruns
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        searched = search(SearchConfig(space="small_cnn", strategy="grid", scheduler="fifo",
                                       num_trials=3, max_epochs=1, retrain_epochs=1,
                                       tracking=Tracking(storage=str(folder / "results"))))
        retrained = retrain_best(searched.parent_run_id, epochs=1, top_k=2, seeds=2)
        yield SimpleNamespace(uri=uri, folder=folder, search=searched, retrained=retrained,
                              client=MlflowClient(uri), data=load_dataset("digits", seed=0))


@pytest.fixture
def store(done, monkeypatch):
    monkeypatch.chdir(done.folder)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", done.uri)
    return done


def test_retrained_models_reload_from_mlflow_and_reproduce_their_test_accuracy(store):
    for outcome in store.retrained.outcomes:
        run = store.client.get_run(outcome.run_id)
        assert run.data.tags["raynas.role"] == "retrain"
        assert run.data.tags["mlflow.parentRunId"] == store.search.parent_run_id
        assert run.data.tags["raynas.model_uri"] == outcome.model_uri
        assert {"architecture.json", "space.yaml"} <= {
            a.path for a in store.client.list_artifacts(outcome.run_id)}
        assert json.loads(mlflow.artifacts.load_text(
            f"runs:/{outcome.run_id}/architecture.json")) == outcome.arch
        info = mlflow.models.get_model_info(outcome.model_uri)
        assert info.signature is not None and info.saved_input_example_info is not None

        model = mlflow.pytorch.load_model(outcome.model_uri)
        with torch.no_grad():
            predicted = model(torch.as_tensor(store.data.x_test)).argmax(1).numpy()
        accuracy = float(np.mean(predicted == store.data.y_test))
        assert accuracy == pytest.approx(run.data.metrics["test_accuracy"])
        assert accuracy == pytest.approx(outcome.test_accuracies[0])  # the first seed's model


def test_top_k_times_seeds_gives_k_runs_with_mean_and_std(store):
    outcomes = store.retrained.outcomes
    assert [o.rank for o in outcomes] == [1, 2]
    assert len({o.run_id for o in outcomes}) == 2
    # the search's two best trials by validation accuracy, best first
    trials = [r for r in store.client.search_runs(
        [store.client.get_experiment_by_name("small_cnn").experiment_id],
        f"tags.mlflow.parentRunId = '{store.search.parent_run_id}' and "
        "tags.`raynas.role` = 'trial'")]
    best_two = sorted((r.data.metrics["val_accuracy"] for r in trials), reverse=True)[:2]
    assert [o.val_accuracy for o in outcomes] == best_two
    for outcome in outcomes:
        assert outcome.seeds == [0, 1]
        metrics = store.client.get_run(outcome.run_id).data.metrics
        per_seed = [metrics["test_accuracy_seed_0"], metrics["test_accuracy_seed_1"]]
        assert per_seed == pytest.approx(outcome.test_accuracies)
        assert metrics["test_accuracy_mean"] == pytest.approx(statistics.fmean(per_seed))
        assert metrics["test_accuracy_std"] == pytest.approx(statistics.stdev(per_seed))
    # seed 0 of the best architecture is the search's own final training, reproduced
    assert outcomes[0].arch == store.search.best["arch"]
    assert outcomes[0].test_accuracies[0] == pytest.approx(store.search.best["test_accuracy"])


def test_champion_alias_points_at_the_best_mean(store):
    champion = max(store.retrained.outcomes, key=lambda o: o.mean)
    assert store.retrained.champion is champion
    version = store.client.get_model_version_by_alias("small_cnn", CHAMPION)
    assert f"models:/small_cnn/{version.version}" == champion.model_uri
    assert version.run_id == champion.run_id


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exports_match_pytorch_and_are_logged_on_the_models_run(store, tmp_path, fmt):
    exported = export_model(f"models:/small_cnn@{CHAMPION}", fmt, str(tmp_path))
    champion = store.retrained.champion
    assert exported.run_id == champion.run_id
    # an independent check, on the whole test split: the file as a user would load it
    x = store.data.x_test
    with torch.no_grad():
        expected = mlflow.pytorch.load_model(champion.model_uri)(torch.as_tensor(x)).numpy()
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(exported.path))
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
    else:
        with torch.no_grad():
            got = torch.jit.load(str(exported.path))(torch.as_tensor(x)).numpy()
    assert got.shape == expected.shape == (len(x), 10)
    assert np.abs(got - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
    assert exported.max_abs_diff <= exported.tolerance
    run = store.client.get_run(champion.run_id)
    assert run.data.metrics[f"export_{fmt}_max_abs_diff"] == pytest.approx(exported.max_abs_diff)
    assert f"export/{exported.path.name}" in {
        a.path for a in store.client.list_artifacts(champion.run_id, "export")}


def test_retrain_an_architecture_file_from_the_command_line(store, tmp_path, capsys):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(store.search.best["arch"]))
    assert main(["retrain", str(arch), "--epochs", "1", "--seeds", "1", "--experiment",
                 "from-file", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)  # the whole of stdout
    only, = summary["architectures"]
    assert summary["search_run_id"] is None and only["val_accuracy"] is None
    assert summary["champion"] == only["model_uri"] == "models:/from-file/1"
    # same architecture, data and seed as the search's final training: same test accuracy
    assert only["test_accuracies"] == [pytest.approx(store.search.best["test_accuracy"])]
    version = store.client.get_model_version_by_alias("from-file", CHAMPION)
    assert str(version.version) == "1"


@pytest.mark.parametrize("argv, message", [
    (["retrain", "0123456789abcdef", "--epochs", "1"], "neither an architecture file nor"),
    (["retrain", "missing.json", "--epochs", "1"], "cannot read the architecture file"),
    (["retrain", "broken.json", "--epochs", "1"], "not a JSON architecture"),
    (["retrain", "TRIAL", "--epochs", "1"], "is not a raynas search (raynas.role=trial)"),
    (["retrain", "SEARCH", "--epochs", "1", "--seeds", "0"], "--seeds: must be >= 1"),
    (["export", "models:/nope/1", "--format", "onnx"], "Registered Model with name=nope"),
    (["export", "model.onnx", "--format", "onnx"], "MODEL_URI: 'model.onnx': expected"),
    (["export", "models:/small_cnn/1", "--format", "tflite"], "argument --format: invalid"),
])
def test_bad_input_is_one_line_and_exit_code_2(store, tmp_path, capsys, argv, message):
    (store.folder / "broken.json").write_text("{not json")
    trial = store.client.search_runs(
        [store.client.get_experiment_by_name("small_cnn").experiment_id],
        "tags.`raynas.role` = 'trial'", max_results=1)[0].info.run_id
    ids = {"TRIAL": trial, "SEARCH": store.search.parent_run_id}
    try:
        code = main([ids.get(a, a) for a in argv])
    except SystemExit as exc:  # argparse's errors exit from the parser itself
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("raynas: error: ") and message in err and "\n" not in err
