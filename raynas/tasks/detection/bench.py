"""``raynas bench detection``: what a detection search finds, against a fixed baseline detector
trained the same way.

The search is the README's: ``raynas search --space detection`` with TPE and ASHA on epochs.
The baseline is one fixed, hand-written architecture of the same space
(``search_spaces/detection_baseline.json``: a three-layer CNN, an FPN on its two deepest scales
and an FCOS head). It is trained by the same final training as the search's best (the same
function, epochs, seed and train+val images) and tested on the same held-out images. Each seed
draws its own data split. The ratio is the searched detectors' mean test mAP@.5 over the
baseline's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from raynas.bench.common import Print, Report, machine
from raynas.config import SearchConfig, Tracking
from raynas.errors import ConfigError
from raynas.estimation import load_space
from raynas.estimation.fidelity import Fidelity
from raynas.estimation.train import TrialSettings
from raynas.experiment.driver import search
from raynas.space import Space, arch_hash, builtin_dir
from raynas.tasks.detection.data import load_detection, write_synthetic
from raynas.tasks.detection.train import retrain_detector
from raynas.tracking.store import connect

#: The baseline's file: ``raynas retrain`` trains it as the bench does.
BASELINE_FILE = "detection_baseline.json"
SCORES = ("map_50", "map")
EXPERIMENT = "bench-detection"


def baseline_arch(space: Space) -> dict[str, Any]:
    return space.validate(json.loads((builtin_dir() / BASELINE_FILE).read_text()))


def run(dataset: str | None, trials: int, max_epochs: int, retrain_epochs: int, seeds: int,
        output: Path, strategy: str = "tpe", print_fn: Print = print) -> Report:
    """Per seed: the search (its best retrained ``retrain_epochs`` epochs) and the baseline
    trained as long; on ``dataset`` or, without one, on ``raynas data synth-detection``'s."""
    host = machine()
    space = load_space("detection")
    baseline = baseline_arch(space)
    rows = []
    with tempfile.TemporaryDirectory(prefix="raynas-bench-detection-") as folder:
        root = Path(folder).resolve()
        dataset = dataset or f"coco:{write_synthetic(root / 'shapes')}"
        uri = f"sqlite:///{root}/mlflow.db"
        # Its artifacts beside its store: MLflow's default is ./mlruns in the current folder.
        connect(uri).create_experiment(EXPERIMENT, (root / "mlruns").as_uri())
        for seed in range(seeds):
            started = time.time()
            result = search(SearchConfig(
                space="detection", dataset=dataset, strategy=strategy, scheduler="asha",
                num_trials=trials, max_epochs=max_epochs, retrain_epochs=retrain_epochs,
                seed=seed, tracking=Tracking(experiment=EXPERIMENT, tracking_uri=uri,
                                             storage=str(root / "ray"))),
                progress=print_fn)
            rows.append({"seed": seed, "detector": "searched",
                         "arch_hash": result.best["arch_hash"], **_parts(result.best["arch"]),
                         **{f"test_{k}": result.best[f"test_{k}"] for k in SCORES},
                         "seconds": round(time.time() - started, 1)})
            started = time.time()
            fixed = retrain_detector(space, baseline, load_detection(dataset, seed=seed),
                                     retrain_epochs, TrialSettings(Fidelity(retrain_epochs), seed))
            rows.append({"seed": seed, "detector": "baseline", "arch_hash": arch_hash(baseline),
                         **_parts(baseline),
                         **{f"test_{k}": fixed.test_scores[k] for k in SCORES},
                         "seconds": round(time.time() - started, 1)})
            print_fn(f"seed {seed}: test mAP@.5 searched {rows[-2]['test_map_50']:.3f} "
                     f"(search + retraining {rows[-2]['seconds']:.0f} s), baseline "
                     f"{rows[-1]['test_map_50']:.3f} (training {rows[-1]['seconds']:.0f} s)")
    mean = {d: {k: statistics.fmean(r[f"test_{k}"] for r in rows if r["detector"] == d)
                for k in SCORES} for d in ("searched", "baseline")}
    for d in mean:
        print_fn(f"{d}: mean test mAP@.5 {mean[d]['map_50']:.3f}, mAP@[.5:.95] "
                 f"{mean[d]['map']:.3f} over {seeds} seeds")
    report = Report(
        "detection", mean["searched"]["map_50"] / max(mean["baseline"]["map_50"], 1e-9),
        "test mAP@.5 of the searched detector / the fixed baseline's (higher is better)",
        "> 1", rows, host, summary={"mean": mean},
        settings={"dataset": dataset, "trials": trials, "max_epochs": max_epochs,
                  "retrain_epochs": retrain_epochs, "seeds": seeds, "strategy": strategy})
    report.write(output, print_fn)
    return report


def _parts(arch: dict[str, Any]) -> dict[str, Any]:
    """What a row says of a detector's architecture besides its hash."""
    return {"head": arch["head"], "neck": arch["neck"], "levels": arch["levels"],
            "layers": len(arch["layers"])}


def main(args: argparse.Namespace) -> None:
    """``raynas bench detection``: its flags checked, then ``run``."""
    if min(args.trials, args.max_epochs, args.retrain_epochs, args.seeds) < 1:
        raise ConfigError("raynas bench detection: --trials, --max-epochs, --retrain-epochs and "
                          "--seeds must be >= 1")
    run(args.dataset, args.trials, args.max_epochs, args.retrain_epochs, args.seeds,
        Path(args.output), args.strategy)
