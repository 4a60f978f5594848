"""``raynas bench overhead``: what raynas adds to every trial, against plain Ray Tune.

What is compared. The same trials, proposed by the same searcher (Optuna's seeded random sampler
behind ``ConcurrencyLimiter``, so every side evaluates the same architectures in the same order),
``reuse_actors=True``, the same concurrency, on the same local Ray: once through
``raynas.experiment.driver.search`` (MLflow tracking on, a SQLite store), once through a plain
``tune.Tuner`` whose function trainable does the same evaluation and reports it (the ratio's
baseline), and once more with Ray's own ``MLflowLoggerCallback`` recording each trial in the same
kind of store (what a Tune user writes to get MLflow records without raynas; reported beside).

"Trivial evaluation", and why it is fair. The evaluation is the part both sides must do: build
the architecture's network, train it for one epoch, measure validation accuracy. It is made as
cheap as it can be without removing it - the smallest useful space (one tiny layer) and a tiny
slice of ``digits`` (one training batch) - and both sides run the very same code for it
(``raynas.estimation.train.Run``), so what is left to differ is orchestration alone.
Everything raynas does on top of that counts as overhead: decoding the flat config, measuring
params, FLOPs, latency and memory, the dedup wrapper, the MLflow child run per trial (params,
per-epoch metrics, ``architecture.json``, structure tags, the architecture diagram, status)
written through the durable ledger. (Checkpoints: one after every epoch but the last, which
nothing would resume from - so none here, with one epoch per trial.) With a near-zero
evaluation the ratio is the worst case: a real trial (seconds to hours of training) dilutes the
same absolute cost, printed as ms/trial.

What is timed is the trial phase, the same window on both sides: from the first trial's first
result to the end of the last trial, for raynas until the ledger has applied every MLflow write
of the trials (its background thread draws the diagrams too). Outside it, and reported apart,
is what a ``Tuner.fit`` costs whatever the trials: Ray starting the trial actors (~6 s on the
2-core machine) and, in some fits, waiting at the end for an actor that started too late to be
used (~5 s more after the last trial, in fits whose trials all ran on one of the two actors;
measured 2026-12-07 with plain Tune: 24 trials of ~50 ms, the whole fit 6.6 s or 12-13 s at
random, the trials themselves about 1 s), which decided the older whole-fit ratio. raynas's
fixed cost per search (the parent run, retraining the best architecture, logging and
registering it, the report) is reported apart as well. Repeats alternate the two sides.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlflow.tracking import MlflowClient
from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.search import ConcurrencyLimiter
from sklearn.datasets import load_digits

from raynas import strategies
from raynas.bench.common import Print, Report, interleaved, machine, paired_ratio, sig
from raynas.config import Resources, SearchConfig, Tracking
from raynas.data import Dataset, load_dataset
from raynas.estimation import load_space
from raynas.estimation.train import Run, tensors
from raynas.experiment.driver import search
from raynas.runtime import ray_session
from raynas.strategies.base import StrategyContext
from raynas.tracking.ledger import Ledger

SPACE_YAML = """\
name: bench_trivial
model: macro
description: the smallest useful space (one 8-channel layer); the learning rate keeps it infinite
space:
  stem_channels: 8
  layers:
    repeat: [1, 1]
    block:
      op: {choice: [conv_3x3, max_pool_3x3]}
      channels: 8
      stride: 2
      connection: series
  train:
    lr: {float: [1.0e-3, 1.0e-2], log: true}
    batch_size: 64
    optimizer: adam
"""
STRATEGY = "random"
EPOCHS = 1
EXPERIMENT = "bench-overhead"
FULL: dict[str, Any] = {"trials": 48, "repeats": 5, "concurrency": 2}
#: No warm-up: its numbers are for sanity checks, not for reading.
QUICK: dict[str, Any] = {"trials": 4, "repeats": 1, "concurrency": 2, "warm_up": False}


def tracking(folder: Path) -> str:
    """A SQLite MLflow store in ``folder``, its experiment's artifacts there too (a new
    experiment's default artifact root would be ``./mlruns`` of the current directory)."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    if client.get_experiment_by_name(EXPERIMENT) is None:
        client.create_experiment(EXPERIMENT, artifact_location=(folder / "mlruns").as_uri())
    return uri


def tiny_digits(folder: Path, samples: int = 80) -> str:
    """The first ``samples`` digits (+ 20 as the test split) as an ``npz:`` dataset spec: one
    training batch after the validation split."""
    digits = load_digits()
    x, y = digits.images.astype(np.float32) / 16.0, digits.target
    path = folder / "tiny_digits.npz"
    np.savez(path, x=x[:samples], y=y[:samples], x_test=x[samples : samples + 20],
             y_test=y[samples : samples + 20])
    return f"npz:{path}"


def plain_trial(config: dict[str, Any], *, space: Any, data: Dataset, seed: int) -> None:
    """The baseline's function trainable: the same evaluation as raynas's, reported to Tune."""
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    run = Run(space, space.decode(config), data.input_shape, data.num_classes, EPOCHS, cpu, seed)
    x, y, x_val, y_val = tensors(cpu, data.x_train, data.y_train, data.x_val, data.y_val)
    for train_loss in run.epochs(x, y, EPOCHS):
        val_loss, val_accuracy = run.evaluate(x_val, y_val)
        tune.report({"val_accuracy": val_accuracy, "val_loss": val_loss,
                     "train_loss": train_loss})


class TrialPhase(tune.Callback):
    """Plain Tune's window: its first trial result to the end of its ``trials``-th trial."""

    def __init__(self, trials: int) -> None:
        self.trials, self.done, self.marks = trials, 0, {}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        self.marks.setdefault("first result", time.perf_counter())

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.done += 1
        if self.done == self.trials:
            self.marks["last trial"] = time.perf_counter()


def plain_tune(space: Any, data: Dataset, trials: int, concurrency: int, seed: int,
               storage: Path, tracking_uri: str | None = None) -> tuple[float, float]:
    """(seconds of the trial phase, seconds of ``Tuner.fit``) for ``trials`` trials of plain
    Tune with raynas's searcher; with ``tracking_uri``, each trial also recorded in MLflow by
    Ray's own ``MLflowLoggerCallback`` (a run per trial, its params and every result's
    metrics): what a Tune user writes to get MLflow records without raynas."""
    ctx = StrategyContext(space, "val_accuracy", "max", seed, trials, concurrency, EPOCHS)
    # The OptunaSearch inside raynas's searcher chain.
    searcher = strategies.get(STRATEGY).build(ctx).dedup.searcher
    phase = TrialPhase(trials)
    # The phase ends after the logger's writes: callbacks run in their list's order.
    callbacks = [MLflowLoggerCallback(tracking_uri, experiment_name=EXPERIMENT)] * bool(
        tracking_uri) + [phase]
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(plain_trial, space=space, data=data, seed=seed),
                            {"cpu": 1}),
        tune_config=tune.TuneConfig(metric="val_accuracy", mode="max", num_samples=trials,
                                    search_alg=ConcurrencyLimiter(searcher, concurrency),
                                    reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(storage), verbose=0, callbacks=callbacks))
    started = time.perf_counter()
    grid = tuner.fit()
    seconds = time.perf_counter() - started
    if grid.num_errors or len(grid) != trials:
        raise RuntimeError(f"plain Tune: {grid.num_errors} of {len(grid)} trials failed")
    return phase.marks["last trial"] - phase.marks["first result"], seconds


class Phases:
    """A ``progress`` callable for ``search``: the same window as ``TrialPhase``, from the first
    trial's first result to the end of the ``trials``-th trial plus the MLflow writes of the
    trials still pending then (the ledger applies them in a background thread; a backlog is
    per-trial work all the same); and when the search phase started and ended."""

    def __init__(self, trials: int) -> None:
        self.trials = trials
        self.marks: dict[str, float] = {}
        self.folder = ""
        self.backlog = 0  # writes still pending when the last trial ended

    def __call__(self, message: str) -> None:
        now = time.perf_counter()
        if message.startswith("searching:"):
            self.folder = message.rpartition("; folder ")[2]
            self.marks["searching:"] = now
        elif message.startswith("trial ") and " epoch " in message:
            self.marks.setdefault("first result", now)
        elif message.startswith("trial ") and f"[{self.trials} done" in message:
            ledger = Ledger.open(self.folder, "", "")  # the search's own (one per process)
            self.backlog = ledger.pending
            ledger.flush(wait_s=10)
            self.marks["last trial"] = time.perf_counter()
        elif message.startswith("best:"):
            self.marks["best:"] = now

    def seconds(self) -> tuple[float, float]:
        """(the trial phase, the search phase: ``searching:`` to ``best:``)."""
        marks = ("searching:", "first result", "last trial", "best:")
        if missing := [m for m in marks if m not in self.marks]:
            raise RuntimeError(f"raynas search: progress marks missing: {missing}")
        return (self.marks["last trial"] - self.marks["first result"],
                self.marks["best:"] - self.marks["searching:"])


def raynas_search(space_path: Path, dataset: str, trials: int, concurrency: int, seed: int,
                  folder: Path) -> tuple[float, float, float, int]:
    """(seconds of the trial phase, of the search phase, of the whole ``search`` call; MLflow
    writes still pending when the last trial ended)."""
    phases = Phases(trials)
    started = time.perf_counter()
    result = search(SearchConfig(
        space=str(space_path), dataset=dataset, strategy=STRATEGY, scheduler="fifo",
        num_trials=trials, max_epochs=EPOCHS, seed=seed, retrain_epochs=1,
        resources=Resources(concurrency=concurrency),
        tracking=Tracking(experiment=EXPERIMENT, tracking_uri=tracking(folder),
                          storage=str(folder / "results"), tracking_wait=10)), progress=phases)
    total = time.perf_counter() - started
    if result.num_trials != trials or result.num_failed:
        raise RuntimeError(f"raynas search: {result.num_failed} of {result.num_trials} failed")
    return *phases.seconds(), total, phases.backlog


def run(trials: int, repeats: int, concurrency: int, output: Path, warm_up: bool = True,
        print_fn: Print = print) -> Report:
    host = machine()
    with (ray_session("local", num_cpus=max(2, concurrency)),
          tempfile.TemporaryDirectory(prefix="raynas-bench-") as tmp):
        folder = Path(tmp)
        space_path = folder / "bench_trivial.yaml"
        space_path.write_text(SPACE_YAML)
        dataset = tiny_digits(folder)
        space, data = load_space(space_path), load_dataset(dataset, seed=0)
        print_fn(f"overhead: {trials} trivial trials ({data.summary()}; 1 epoch, one "
                 f"batch), {concurrency} at a time, {repeats} repeats, alternating")
        systems = ("raynas", "tune", "tune+mlflow")
        extra: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}

        def with_raynas(seed: int) -> float:
            trial_s, search_s, whole_s, pending = raynas_search(space_path, dataset, trials,
                                                                concurrency, seed, folder)
            extra["raynas"].append({"fit_s": sig(search_s), "whole_search_s": sig(whole_s),
                                    "backlog_writes": pending})
            return trial_s

        def with_tune(name: str, uri: str | None) -> Callable[[int], float]:
            def fit(seed: int) -> float:
                trial_s, fit_s = plain_tune(space, data, trials, concurrency, seed,
                                            folder / "plain", uri)
                extra[name].append({"fit_s": sig(fit_s)})
                return trial_s
            return fit

        # The first Tune run of a process pays one-time costs (imports, Ray starting worker
        # processes): a warm-up, not counted. raynas's own one-time costs (MLflow's store
        # creation, imports) happen before its trials start.
        uri = tracking(folder)
        if warm_up:
            print_fn("warm-up (not counted) ...")
            plain_tune(space, data, 1, 1, 0, folder / "plain", uri)
        seconds = interleaved({"raynas": with_raynas, "tune": with_tune("tune", None),
                               "tune+mlflow": with_tune("tune+mlflow", uri)}, repeats)
    rows = [{"repeat": i, "system": name, "trials": trials, "trial_s": sig(s),
             "trials_per_s": sig(trials / s), **extra[name][i]}
            for name, values in seconds.items() for i, s in enumerate(values)]
    per_trial = {name: statistics.median(values) / trials for name, values in seconds.items()}
    ratios = [r / t for r, t in zip(seconds["raynas"], seconds["tune"], strict=True)]
    ratio = paired_ratio(seconds["raynas"], seconds["tune"])
    fixed = statistics.median(e["whole_search_s"] - e["fit_s"] for e in extra["raynas"])
    fit = {name: statistics.median(e["fit_s"] for e in extra[name]) for name in systems}
    summary = {**{f"{name}_trials_per_s": sig(1 / per_trial[name]) for name in systems},
               "overhead_ms_per_trial": sig(1000 * (per_trial["raynas"] - per_trial["tune"])),
               "ratio_min": sig(min(ratios)), "ratio_max": sig(max(ratios)),
               "ratio_to_tune_with_mlflow": sig(paired_ratio(seconds["raynas"],
                                                             seconds["tune+mlflow"])),
               **{f"{name}_fit_s": sig(fit[name]) for name in systems},
               "raynas_fixed_s_per_search": sig(fixed)}
    for name in systems:
        print_fn(f"{name:>11}: {summary[f'{name}_trials_per_s']:.2f} trials/s in the trial "
                 f"phase ({1000 * per_trial[name]:.1f} ms/trial, median of {repeats}); whole "
                 f"fit {fit[name]:.1f} s (median)")
    print_fn(f"raynas adds {summary['overhead_ms_per_trial']:.1f} ms per trial to plain Tune "
             f"(paired ratios {min(ratios):.2f} to {max(ratios):.2f}); against Tune with Ray's "
             f"MLflowLoggerCallback {summary['ratio_to_tune_with_mlflow']:.2f}; its fixed cost "
             f"per search (parent run, retrain, model registration) {fixed:.1f} s")
    report = Report("overhead", ratio, "ratio = raynas seconds per trial / plain Ray Tune's, "
                    "in the trial phase (lower is better)", "<= 1.10", rows, host, summary,
                    {"trials": trials, "repeats": repeats, "concurrency": concurrency,
                     "strategy": STRATEGY, "epochs": EPOCHS, "dataset": data.summary(),
                     "warm_up": warm_up})
    report.write(output, print_fn)
    return report


def main(args: argparse.Namespace) -> None:
    """``raynas bench overhead [--quick]``: ``run`` at its full or its CI size."""
    run(**(QUICK if args.quick else FULL), output=Path(args.output))
