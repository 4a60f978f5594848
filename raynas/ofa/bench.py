"""``raynas bench ofa``: what Once-for-All's supernet is worth against training from scratch.

On ``digits``, one elastic supernet of ``ofa_mbv3`` is trained by progressive shrinking
(``raynas ofa train``) and specialised for three latency targets (``raynas specialize``; the
targets are a quarter, half and three quarters of the way from the smallest to the largest
sub-network's latency-table prediction). Then:

- the Kendall tau between the inherited test accuracy (BatchNorm re-estimated) and the
  stand-alone test accuracy (the same architecture trained from scratch on train+val, as
  ``raynas retrain`` does) of the three specialised sub-networks and random ones;
- the specialised sub-networks' test accuracy against the same architectures from scratch;
- the accuracy predictor's held-out RMSE;
- the wall time of "train once + specialise 3" against "search 3 times": three constrained
  searches (``raynas.search``, evolution, one trial at a time as the supernet trains on one
  CPU, each ending with its retrained final model) for the same targets.

``ratio`` is the three searches' wall time over the supernet's train + specialise time.
Everything goes to a throw-away MLflow store and storage in a temporary folder.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from scipy.stats import kendalltau

from raynas.bench.common import Print, Report, machine, sig
from raynas.config import Resources, SearchConfig, Tracking
from raynas.data import load_dataset
from raynas.errors import RaynasError
from raynas.estimation.fidelity import Fidelity
from raynas.estimation.train import TrialSettings, retrain, tensors
from raynas.experiment.driver import search
from raynas.models import latency_units
from raynas.objectives.latency import LatencyTable
from raynas.ofa.shrinking import inherited_accuracy, load_supernet
from raynas.ofa.specialize import read_run, specialize, train_elastic_supernet
from raynas.runtime import ray_session
from raynas.space import arch_hash
from raynas.strategies.base import one_thread
from raynas.tracking.store import connect

SPACE, DATASET = "ofa_mbv3", "digits"
TARGETS = (0.25, 0.5, 0.75)  # where the latency targets sit between the smallest and largest
FULL: dict[str, Any] = {"epochs_per_phase": 5, "samples": 100, "subnets": 12,
                        "scratch_epochs": 8, "search_trials": 24, "evaluations": 300}
QUICK: dict[str, Any] = {"epochs_per_phase": 1, "samples": 8, "subnets": 3, "scratch_epochs": 1,
                         "search_trials": 2, "evaluations": 20}


def run(epochs_per_phase: int, samples: int, subnets: int, scratch_epochs: int,
        search_trials: int, evaluations: int, output: Path, seed: int = 0,
        print_fn: Print = print) -> Report:
    host = machine()
    # Ray for the whole benchmark: its stages (supernet, scratch trainings, searches) share it.
    with (ray_session(progress=print_fn),
          tempfile.TemporaryDirectory(prefix="raynas-bench-ofa-") as folder):
        uri = f"sqlite:///{Path(folder).resolve() / 'mlflow.db'}"
        storage = str(Path(folder).resolve() / "storage")
        report = _run(epochs_per_phase, samples, subnets, scratch_epochs, search_trials,
                      evaluations, seed, uri, storage, host, print_fn)
    report.write(output, print_fn)
    return report


def _run(epochs_per_phase: int, samples: int, subnets: int, scratch_epochs: int,
         search_trials: int, evaluations: int, seed: int, uri: str, storage: str,
         host: dict[str, Any], print_fn: Print) -> Report:
    trained = train_elastic_supernet(DATASET, epochs_per_phase, space=SPACE, seed=seed,
                                     tracking=uri, storage=storage, progress=print_fn)
    print_fn(f"supernet: {trained.epochs} epochs in {trained.seconds:.1f} s; val_accuracy "
             f"largest {trained.val_accuracy:.4f}, smallest {trained.val_accuracy_smallest:.4f}")
    data = load_dataset(DATASET, seed=seed)
    with tempfile.TemporaryDirectory() as local:
        source, weights = read_run(connect(uri), trained.run_id, Path(local))
        supernet = load_supernet(weights, source.space, data)
    with one_thread():  # latencies as a trial with one CPU measures them
        table = LatencyTable("cpu", 1)
        low, high = (table.predict(latency_units(source.space, arch, data.input_shape,
                                                 data.num_classes))
                     for arch in (supernet.choices.smallest(), supernet.choices.largest()))
    targets = [sig(low + f * (high - low), 3) for f in TARGETS]
    print_fn(f"latency table: smallest sub-network {low:.3f} ms, largest {high:.3f} ms; "
             f"targets {', '.join(f'{t} ms' for t in targets)}")

    special = []
    for target in targets:
        done = specialize(trained.run_id, [f"latency_ms<={target}"], tracking=uri,
                          samples=samples, evaluations=evaluations, seed=seed, progress=print_fn)
        special.append(done)
        print_fn(f"specialised for latency_ms<={target}: test_accuracy {done.test_accuracy:.4f}"
                 f", predicted {done.predicted_accuracy:.4f} ({done.seconds:.1f} s)")
    ofa_s = trained.seconds + sum(s.seconds for s in special)

    rng_archs = []
    rng = random.Random(seed + 1)
    while len(special) + len(rng_archs) < subnets:
        rng_archs.append(source.space.sample(rng))
    archs = [s.arch for s in special] + rng_archs
    x, x_test, y_test = tensors(torch.device("cpu"), data.x_train, data.x_test, data.y_test)
    with one_thread():
        inherited = [inherited_accuracy(supernet, a, x, x_test, y_test, seed) for a in archs]
    print_fn(f"training {len(archs)} sub-networks from scratch ({scratch_epochs} epochs on "
             "train+val, as raynas retrain does)")
    data_ref = ray.put(data)
    task = ray.remote(retrain).options(num_cpus=1)
    scratch = [r.test_accuracy for r in ray.get([
        task.remote(source.space, a, data_ref, scratch_epochs,
                    TrialSettings(Fidelity(scratch_epochs), seed)) for a in archs])]
    tau = kendalltau(inherited, scratch)

    searches = []
    for target in targets:
        clock = time.perf_counter()
        try:
            found = search(SearchConfig(
                space=SPACE, dataset=DATASET, strategy="evolution", scheduler="fifo",
                num_trials=search_trials, max_epochs=scratch_epochs,
                retrain_epochs=scratch_epochs, seed=seed, resources=Resources(concurrency=1),
                tracking=Tracking(experiment=f"bench-ofa-search-{target}", tracking_uri=uri,
                                  storage=storage),
                constraint=[f"latency_ms<={target}"]), progress=print_fn).best.get(
                    "test_accuracy", math.nan)
        except RaynasError as exc:  # e.g. no trial of the search met the target
            print_fn(f"search for latency_ms<={target}: {exc}")
            found = math.nan
        searches.append((found, time.perf_counter() - clock))
        print_fn(f"search for latency_ms<={target}: test_accuracy {found:.4f} "
                 f"({searches[-1][1]:.1f} s)")
    search_s = sum(s for _, s in searches)

    rows = [{"arch_hash": arch_hash(a), "role": "specialised" if i < len(special) else "random",
             "target_latency_ms": targets[i] if i < len(special) else None,
             "inherited_test_accuracy": sig(inh), "scratch_test_accuracy": sig(sc)}
            for i, (a, inh, sc) in enumerate(zip(archs, inherited, scratch, strict=True))]
    per_target = [{"target_latency_ms": t, "specialised_test_accuracy": s.test_accuracy,
                   "same_arch_scratch_test_accuracy": scratch[i],
                   "latency_lut_ms": s.costs.get("latency_lut_ms"),
                   "latency_ms_measured": s.costs.get("latency_ms"),
                   "specialise_s": round(s.seconds, 1),
                   "search_test_accuracy": found,
                   "search_s": round(seconds, 1)}
                  for i, (t, s, (found, seconds)) in enumerate(zip(targets, special, searches,
                                                                   strict=True))]
    summary = {
        "kendall_tau": float(tau.statistic), "kendall_p_value": float(tau.pvalue),
        "subnets": len(archs), "predictor_rmse": special[0].predictor_rmse,
        "predictor_samples": special[0].samples, "targets": per_target,
        "supernet_train_s": round(trained.seconds, 1),
        "specialise_s": [round(s.seconds, 1) for s in special],
        "train_once_specialise_3_s": round(ofa_s, 1), "search_3_times_s": round(search_s, 1),
        "supernet_val_accuracy_largest": trained.val_accuracy,
        "supernet_val_accuracy_smallest": trained.val_accuracy_smallest,
        "mean_specialised_minus_scratch": statistics.fmean(
            s.test_accuracy - scratch[i] for i, s in enumerate(special)),
    }
    print_fn(f"Kendall tau (inherited vs from-scratch test accuracy, {len(archs)} sub-networks):"
             f" {summary['kendall_tau']:.3f} (p = {summary['kendall_p_value']:.3f})")
    print_fn(f"predictor RMSE (held out, {special[0].samples} samples): "
             f"{special[0].predictor_rmse:.4f}")
    for row in per_target:
        print_fn(f"latency_ms<={row['target_latency_ms']}: specialised "
                 f"{row['specialised_test_accuracy']:.4f}, same architecture from scratch "
                 f"{row['same_arch_scratch_test_accuracy']:.4f}, constrained search "
                 f"{row['search_test_accuracy']:.4f}")
    print_fn(f"train once + specialise 3: {ofa_s:.1f} s; search 3 times: {search_s:.1f} s")
    return Report("ofa", search_s / ofa_s,
                  "ratio = wall time of 3 constrained searches / Once-for-All's train once + "
                  "specialise 3 (higher: OFA is cheaper per target)", "> 1", rows, host, summary,
                  {"space": SPACE, "dataset": DATASET, "epochs_per_phase": epochs_per_phase,
                   "samples": samples, "subnets": subnets, "scratch_epochs": scratch_epochs,
                   "search_trials": search_trials, "evaluations": evaluations, "seed": seed})


def main(args: argparse.Namespace) -> None:
    """``raynas bench ofa [--quick]``: ``run`` at its full or its CI size."""
    run(**(QUICK if args.quick else FULL), output=Path(args.output))
