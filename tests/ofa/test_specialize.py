"""Once-for-All end to end with a real Ray and a real MLflow store: ``raynas ofa train`` records a
supernet run, ``raynas specialize`` picks, tests, logs and registers a sub-network per target,
the registered model exports like any final model, and what cannot be specialised fails with
one line and exit code 2."""

from __future__ import annotations

import json
import random

import pytest
from mlflow.tracking import MlflowClient

from raynas.cli import main
from raynas.errors import ConfigError
from raynas.experiment.export import export_model
from raynas.models import build_model
from raynas.objectives.measure import count_params
from raynas.ofa.specialize import (
    SAMPLES_FILE,
    SUPERNET_FILE,
    check_targets,
    specialize,
    target_name,
)


@pytest.fixture
def supernet_run(ray_local, tracking, tiny_yaml, tmp_path, monkeypatch, capsys) -> str:
    """A supernet of the tiny space, trained through the CLI (one epoch a phase)."""
    monkeypatch.setenv("RAYNAS_LATENCY_DIR", str(tmp_path / "latency"))
    assert main(["ofa", "train", "--space", tiny_yaml, "--epochs-per-phase", "1",
                 "--json"]) == 0
    done = json.loads(capsys.readouterr().out)  # the whole of stdout: no banner of Tune's
    assert done["epochs"] == 4 and done["pending"] == 0
    return done["run_id"]


def test_train_then_specialise_two_targets(supernet_run, tracking, tiny_space, tmp_path):
    client = MlflowClient(tracking)
    run = client.get_run(supernet_run)
    assert run.data.tags["raynas.role"] == "ofa" and run.info.status == "FINISHED"
    assert {SUPERNET_FILE, "space.yaml"} <= {a.path for a in client.list_artifacts(supernet_run)}
    [child] = client.search_runs([run.info.experiment_id],
                                 f"tags.mlflow.parentRunId = '{supernet_run}'")
    history = client.get_metric_history(child.info.run_id, "phase")
    assert [int(m.value) for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3, 4]
    assert len(client.get_metric_history(child.info.run_id, "kd_loss")) == 3  # not in full

    loose = specialize(supernet_run, ["params<=40000"], samples=8, evaluations=30)
    assert count_params(build_model(tiny_space, loose.arch, (1, 8, 8), 10)) <= 40000
    assert loose.costs["params"] <= 40000
    assert 0 <= loose.test_accuracy <= 1 and loose.predictor_rmse >= 0
    assert loose.model_uri == "models:/ofa_tiny-params-le-40000/1"
    assert SAMPLES_FILE in {a.path for a in client.list_artifacts(supernet_run)}

    tight = specialize(supernet_run, ["latency_ms<=1000", "flops<=250000"], samples=8,
                       evaluations=30)
    assert tight.times["samples_s"] < 0.5  # the first target's samples, read back
    assert tight.costs["flops"] <= 250000
    assert tight.model_uri == "models:/ofa_tiny-latency_ms-le-1000_flops-le-250000/1"
    version = client.get_model_version("ofa_tiny-latency_ms-le-1000_flops-le-250000", "1")
    assert version.run_id == tight.run_id
    spec = client.get_run(tight.run_id)
    assert spec.data.tags["raynas.role"] == "specialize"
    assert spec.data.tags["mlflow.parentRunId"] == supernet_run
    assert spec.data.metrics["test_accuracy"] == pytest.approx(tight.test_accuracy)
    exported = export_model(tight.model_uri, "torchscript", str(tmp_path / "export"))
    assert exported.max_abs_diff <= exported.tolerance and exported.run_id == tight.run_id

    with pytest.raises(ConfigError, match="no sub-network satisfies it, not even the smallest"):
        specialize(supernet_run, ["params<=100"], samples=8, evaluations=5)


def test_what_cannot_be_specialised_is_one_line_and_exit_2(tracking, capsys):
    run = MlflowClient(tracking).create_run(
        MlflowClient(tracking).create_experiment("plain"), tags={"raynas.role": "search"})
    cases = [
        (["specialize", "missing", "--constraint", "latency_ms<=1"], "RUN: missing: not an"),
        (["specialize", run.info.run_id, "--constraint", "latency_ms<=1"],
         "is not a Once-for-All supernet"),
        (["specialize", run.info.run_id, "--constraint", "val_accuracy>=0.9"],
         "bounds a sub-network's costs"),
        (["specialize", run.info.run_id, "--constraint", "latency_ms<=fast"], "not a number"),
        (["ofa", "train", "--space", "small_cnn"], "needs a space of a model with an elastic "
                                                   "supernet (ofa, transformer"),
        (["ofa", "train", "--epochs-per-phase", "0"], "--epochs-per-phase: must be >= 1"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("raynas: error: ") and message in err[-1], (argv, err)


def test_a_target_is_read_by_parse_constraints_and_names_its_registered_model():
    """The registered model's name is built from the parsed constraints (no parsing of its
    own): operators spelled out, integral bounds without a decimal point."""
    targets = check_targets(["latency_ms<=2.5", "params < 200000", "flops>=1e6"])
    assert target_name(targets) == "latency_ms-le-2.5_params-lt-200000_flops-ge-1000000"
    with pytest.raises(ConfigError, match="give at least one bound on latency_ms"):
        check_targets([])
    with pytest.raises(ConfigError, match="unknown metric 'latency'"):
        check_targets(["latency<=2"])


def test_the_winner_is_the_best_scored_one_that_meets_the_target_when_measured(tiny_space):
    """``confirm`` measures the ranked candidates whole, best first, and moves down the ranking
    past one that breaks the target (here the larger sub-network, by its parameter count)."""
    from raynas.data import load_dataset
    from raynas.estimation.costs import CostSettings
    from raynas.objectives.constraints import parse_constraints
    from raynas.ofa.specialize import confirm

    data = load_dataset("digits")
    small, large = (tiny_space.sample(random.Random(s)) for s in (0, 1))
    size = {id(a): count_params(build_model(tiny_space, a, (1, 8, 8), 10)) for a in (small, large)}
    if size[id(small)] > size[id(large)]:
        small, large = large, small
    bound = (size[id(small)] + size[id(large)]) // 2
    assert size[id(small)] <= bound < size[id(large)]
    settings = CostSettings(constraints=tuple(parse_constraints([f"params<={bound}"])))
    arch, score, costs, missed = confirm([(large, 0.9), (small, 0.8)], tiny_space, data,
                                         settings)
    assert (arch, score, missed) == (small, 0.8, 1) and costs["params"] <= bound
    with pytest.raises(ConfigError, match="sub-networks the latency table admits broke it "
                                          "when measured"):
        confirm([(large, 0.9)], tiny_space, data, settings)
