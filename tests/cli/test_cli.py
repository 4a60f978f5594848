"""The `raynas` command as a user runs it: one-line errors with exit code 2, `spaces`,
`strategies`, the flags as the settings they map onto, and the `--json` contract of `search`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

GOOD_LAYER = ("    block:\n      op: {choice: [conv_3x3]}\n      channels: 16\n      stride: 1\n"
              "      connection: series\n")


def raynas(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raynas.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(("args", "message"), [
    (["--space", "{bad}.yaml"], r"malformed YAML"),
    (["--space", "unknown_op.yaml"], r"space\.layers\.block\.op: unknown op 'conv_3x33' "
                                     r"\(did you mean 'conv_3x3'\?\)"),
    (["--space", "empty_choice.yaml"], r"space\.layers\.block\.op: choice: empty list of values"),
    (["--dataset", "npz:/no/such/file.npz"], r"npz:/no/such/file.npz: file not found"),
    (["--strategy", "tpee"], r"unknown strategy 'tpee' \(did you mean 'tpe'\?\)"),
    (["--scheduler", "ashaa"], r"unknown scheduler 'ashaa' \(did you mean 'asha'\?\)"),
    (["--num-trials", "many"], r"argument --num-trials: invalid int value: 'many'"),
    (["--space", "no_such_space"], r"unknown search space 'no_such_space'"),
    (["--address", "127.0.0.1:1"], r"cannot reach a Ray cluster at 127.0.0.1:1"),
    (["--tracking-uri", "http://127.0.0.1:9"], r"MLflow server http://127.0.0.1:9 is not "
                                               r"reachable"),
    (["--tracking-uri", "sqlite:////no/such/dir/m.db"], r"folder /no/such/dir does not exist"),
    (["--dataset", "npz:corrupt.npz"], r"corrupt.npz"),
    (["--objective", "val_acc:max"], r"no trial reports 'val_acc' \(did you mean "
                                     r"'val_accuracy'\?\)"),
    (["--fidelity", "data:2"], r"--fidelity: expected epochs, data, width or resolution"),
    (["--max-failed-trials", "0"], r"--max-failed-trials: must be >= 1"),
    (["--concurrency", "0"], r"--concurrency: must be >= 1"),
    (["--strategy", "zero_cost", "--strategy-option", "topk=3"],
     r"--strategy-option topk: not an option of --strategy zero_cost \(did you mean "
     r"'top_k'\?\); known: proxy, candidates, top_k$"),
    (["--strategy", "zero_cost", "--strategy-option", "top_k=many"],
     r"--strategy-option top_k=many: expected a whole number$"),
    (["--strategy", "oneshot", "--strategy-option", "searcher=darts"],
     r"--strategy-option searcher: 'darts' cannot search against a supernet"),
    (["--strategy-option", "proxy"], r"argument --strategy-option: expected KEY=VALUE, got "
                                     r"'proxy'$"),
    (["--resume", "no_such_folder"], r"not a raynas search folder"),
    (["--resume", "retrain_ledger"], r"retrain_ledger: the ledger folder of a retrain, not of a "
                                     r"search: only raynas sync takes it"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    import re

    write(tmp_path / "{bad}.yaml", "name: bad\nspace:\n  layers: {repeat: [1, 2]\n")
    write(tmp_path / "unknown_op.yaml", "space:\n  layers:\n    repeat: [1, 2]\n"
          + GOOD_LAYER.replace("[conv_3x3]", "[conv_3x3, conv_3x33]"))
    write(tmp_path / "empty_choice.yaml", "space:\n  layers:\n    repeat: [1, 2]\n"
          + GOOD_LAYER.replace("[conv_3x3]", "[]"))
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    (tmp_path / "retrain_ledger").mkdir()
    write(tmp_path / "retrain_ledger" / "raynas.json", '{"role": "retrain"}')
    proc = raynas("search", *args, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raynas: error: "), proc.stderr
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "mlflow.db").exists()  # nothing half-written


def test_the_flags_map_onto_the_settings_and_their_groups():
    """Every setting has its flag, of the same name, defaulting to the config's default; the
    grouped ones land in their group."""
    from raynas.cli import build_parser
    from raynas.cli.search import config_of
    from raynas.config import Failures, Resources, SearchConfig, Tracking

    parser = build_parser()
    assert config_of(parser.parse_args(["search"])) == SearchConfig()
    config = config_of(parser.parse_args([
        "search", "--strategy", "zero_cost", "--strategy-option", "proxy=snip",
        "--strategy-option", "top_k=4", "--strategy-option", "proxy=naswot", "--concurrency",
        "3", "--gpus-per-trial", "0.5", "--tracking-uri", "sqlite:///m.db", "--resume", "auto",
        "--max-retries", "0", "--latency-batch", "8", "--num-trials", "4"]))
    assert config == SearchConfig(
        strategy="zero_cost", strategy_options={"proxy": "naswot", "top_k": "4"}, num_trials=4,
        resources=Resources(concurrency=3, gpus_per_trial=0.5),
        tracking=Tracking(tracking_uri="sqlite:///m.db", resume="auto"),
        failures=Failures(max_retries=0), costs=config.costs)
    assert config.costs.latency_batch == 8


def test_strategies_lists_each_strategy_with_its_options(tmp_path):
    proc = raynas("strategies", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("tpe ") for line in lines)
    zero_cost = next(i for i, line in enumerate(lines) if line.startswith("zero_cost "))
    assert [line.split()[:2] for line in lines[zero_cost + 1: zero_cost + 4]] == [
        ["--strategy-option", "proxy=synflow"], ["--strategy-option", "candidates=1000"],
        ["--strategy-option", "top_k=8"]]
    assert "architectures sampled and scored" in lines[zero_cost + 2]
    assert any("searcher=evolution" in line for line in lines)


def test_spaces_lists_builtin_spaces_with_sizes(tmp_path):
    proc = raynas("spaces", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "macro_cnn" in proc.stdout and "infinite" in proc.stdout
    assert any(line.startswith("small_cnn") and "72" in line for line in proc.stdout.splitlines())


def test_with_json_stdout_is_one_document_and_the_summary_goes_to_stderr(capsys):
    from raynas.cli.common import print_result

    print_result("best: a\nmodel: b", {"best": "a", "model": "b"}, as_json=True)
    out, err = capsys.readouterr()
    assert json.loads(out) == {"best": "a", "model": "b"} and err == "best: a\nmodel: b\n"
    print_result("best: a\nmodel: b", {"best": "a", "model": "b"}, as_json=False)
    assert capsys.readouterr() == ("best: a\nmodel: b\n", "")


@pytest.mark.e2e  # a real search, in a subprocess
def test_search_json_is_the_whole_of_stdout(tmp_path):
    """`raynas search --json | jq .`: no banner of Tune's, no summary line, before the JSON."""
    proc = raynas("search", "--space", "small_cnn", "--num-trials", "2", "--max-epochs", "1",
                  "--retrain-epochs", "1", "--experiment", "cli", "--storage", "results",
                  "--json", cwd=tmp_path)  # a relative storage path: from the working dir
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert "best architecture" in proc.stderr  # the summary, beside the progress
    assert summary["experiment"] == "cli" and summary["num_trials"] == 2
    assert set(summary["best"]) >= {"arch", "trial_id", "val_accuracy", "test_accuracy"}
    assert summary["model_uri"] == "models:/cli/1"
    assert Path(summary["folder"]).parent == tmp_path / "results"
    assert (tmp_path / "mlflow.db").exists()
    assert "trial" in proc.stderr  # progress was visible while it ran
