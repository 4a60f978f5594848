"""``raynas bench sequences``: what a search finds on real time series and real text, against
the field's baselines measured in the same run.

On each UCR/UEA set (bundled with aeon, official train/test split): the search (its best
retrained on train+val for ``--retrain-epochs``), Wang, Yan & Oates 2017's FCN trained by the
same final training (the same function, epochs, seed and data), and 1-NN with the Euclidean
distance. On the Rotten Tomatoes snippets (split by movie): the search over transformers, Kim
2014's text CNN trained the same way, and TF-IDF + logistic regression (scikit-learn) on the
same training and test snippets. Every number is a test accuracy on the held-out split, with
the seconds it took. The ratio is the searched networks' mean test accuracy on the UCR sets over
the FCN's.
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from raynas.bench.common import Print, Report, machine
from raynas.config import SearchConfig, Tracking
from raynas.data import load_dataset
from raynas.errors import ConfigError
from raynas.estimation import load_space
from raynas.estimation.fidelity import Fidelity
from raynas.estimation.train import TrialSettings, retrain
from raynas.experiment.driver import search
from raynas.runtime import ray_session
from raynas.tasks.sequences.baselines import FCN, one_nn_accuracy
from raynas.tasks.sequences.text import write_rotten_tomatoes
from raynas.tracking.store import connect

EXPERIMENT = "bench-sequences"


def run(args: argparse.Namespace, print_fn: Print = print) -> Report:
    host = machine()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="raynas-bench-sequences-") as folder, \
            ray_session(num_cpus=args.cpus):
        root = Path(folder).resolve()
        uri = f"sqlite:///{root}/mlflow.db"
        connect(uri).create_experiment(EXPERIMENT, (root / "mlruns").as_uri())

        def searched(space: str, dataset: str, trials: int, max_epochs: int,
                     retrain_epochs: int) -> dict[str, Any]:
            started = time.time()
            result = search(SearchConfig(
                space=space, dataset=dataset, strategy=args.strategy, scheduler=args.scheduler,
                num_trials=trials, max_epochs=max_epochs, retrain_epochs=retrain_epochs,
                seed=args.seed, tracking=Tracking(experiment=EXPERIMENT, tracking_uri=uri,
                                                  storage=str(root / "ray"))),
                progress=lambda line: None)
            return {"method": f"search ({space})", "test_accuracy": result.best["test_accuracy"],
                    "seconds": round(time.time() - started, 1),
                    "val_accuracy": result.best["val_accuracy"],
                    "arch_hash": result.best["arch_hash"]}

        def trained(space: str, arch: dict[str, Any], data: Any, epochs: int,
                    method: str) -> dict[str, Any]:
            started = time.time()
            done = retrain(load_space(space), arch, data, epochs,
                           TrialSettings(Fidelity(epochs), args.seed))
            return {"method": method, "test_accuracy": done.test_accuracy,
                    "seconds": round(time.time() - started, 1)}

        for name in args.sets:
            data = load_dataset(f"ucr:{name}", args.seed)
            started = time.time()
            nn1 = {"method": "1-NN Euclidean", "test_accuracy": one_nn_accuracy(data),
                   "seconds": round(time.time() - started, 2)}
            found = searched(args.space, f"ucr:{name}", args.trials, args.max_epochs,
                             args.retrain_epochs)
            fcn = trained("conv_attention_1d", FCN, data, args.retrain_epochs, "FCN (Wang 2017)")
            for row in (found, fcn, nn1):
                rows.append({"dataset": name, **row})
            print_fn(f"{name}: search {found['test_accuracy']:.3f} ({found['seconds']:.0f} s), "
                     f"FCN {fcn['test_accuracy']:.3f} ({fcn['seconds']:.0f} s), 1-NN "
                     f"{nn1['test_accuracy']:.3f}")
        if args.text:
            path = write_rotten_tomatoes(root / "rt", args.seed)[0]
            data = load_dataset(f"text:{path}", args.seed)
            started = time.time()
            tfidf = {"method": "TF-IDF + logistic regression",
                     "test_accuracy": tfidf_accuracy(path),
                     "seconds": round(time.time() - started, 1)}
            found = searched("transformer_text", f"text:{path}", args.text_trials,
                             args.text_max_epochs, args.text_retrain_epochs)
            kim = trained("text_cnn", load_space("text_cnn").sample(random.Random(0)), data,
                          args.text_retrain_epochs, "text CNN (Kim 2014)")
            for row in (found, kim, tfidf):
                rows.append({"dataset": "RottenTomatoes", **row})
            print_fn(f"RottenTomatoes: search {found['test_accuracy']:.3f} "
                     f"({found['seconds']:.0f} s), text CNN {kim['test_accuracy']:.3f} "
                     f"({kim['seconds']:.0f} s), TF-IDF + LR {tfidf['test_accuracy']:.3f}")

    def mean(method: str) -> float:
        return statistics.fmean(r["test_accuracy"] for r in rows
                                if r["dataset"] in args.sets and r["method"].startswith(method))

    summary = {m: mean(m) for m in ("search", "FCN", "1-NN")}
    print_fn("mean test accuracy over the UCR sets: " + ", ".join(
        f"{m} {v:.3f}" for m, v in summary.items()))
    report = Report("sequences", summary["search"] / max(summary["FCN"], 1e-9),
                    "mean UCR test accuracy of the search / the FCN's (higher is better)", "> 1",
                    rows, host, summary={"mean": summary},
                    settings={k: v for k, v in vars(args).items() if k != "func"})
    report.write(Path(args.output), print_fn)
    return report


def tfidf_accuracy(path: Path) -> float:
    """TF-IDF of word uni- and bigrams, logistic regression (scikit-learn's defaults), trained
    on every snippet outside the test split, scored on the test split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    train = [r for r in rows if r["split"] != "test"]
    test = [r for r in rows if r["split"] == "test"]
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                          LogisticRegression(max_iter=1000))
    model.fit([r["text"] for r in train], [r["label"] for r in train])
    return float(model.score([r["text"] for r in test], [r["label"] for r in test]))


def main(args: argparse.Namespace) -> None:
    """``raynas bench sequences``: its flags checked, then ``run``."""
    if min(args.trials, args.max_epochs, args.retrain_epochs) < 1:
        raise ConfigError("raynas bench sequences: --trials, --max-epochs and --retrain-epochs "
                          "must be >= 1")
    if args.quick:
        args.sets, args.trials, args.max_epochs, args.retrain_epochs = (
            ["GunPoint"], 2, 2, 2)
        args.text_trials, args.text_max_epochs, args.text_retrain_epochs = 2, 1, 1
    run(args)
