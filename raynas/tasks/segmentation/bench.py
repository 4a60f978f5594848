"""``raynas bench medical``: a segmentation search on the real MRI of ``raynas data real-mri``
(brain extraction, AAL parcellation; the left hemisphere trains, the right tests), beside two
fixed baselines on the same data and test volumes (``baselines``): MONAI's UNet as its tutorial
configures it, trained by the same final training as the search's best (its training
hyperparameters, epochs and seed), and the best intensity threshold. The ratio is the searched
network's test Dice over the better baseline's, on the first task.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from raynas.bench.common import Print, Report, machine
from raynas.config import SearchConfig, Tracking
from raynas.data import load_dataset
from raynas.errors import ConfigError
from raynas.experiment.driver import search
from raynas.tasks.segmentation.baselines import monai_unet, threshold_scores
from raynas.tasks.segmentation.realmri import write
from raynas.tracking.store import connect

EXPERIMENT = "bench-medical"


def run(datasets: dict[str, str], trials: int, max_epochs: int, retrain_epochs: int,
        seed: int, strategy: str, root: Path, output: Path, print_fn: Print = print) -> Report:
    """Per dataset: the search, MONAI's U-Net and the threshold, with their test Dice, HD95
    and seconds."""
    host = machine()
    uri = f"sqlite:///{root}/mlflow.db"
    connect(uri).create_experiment(EXPERIMENT, (root / "mlruns").as_uri())
    rows: list[dict[str, Any]] = []
    for task, dataset in datasets.items():
        started = time.time()
        result = search(SearchConfig(
            space="unet3d_seg", dataset=dataset, strategy=strategy, scheduler="asha",
            num_trials=trials, max_epochs=max_epochs, retrain_epochs=retrain_epochs, seed=seed,
            tracking=Tracking(experiment=EXPERIMENT, tracking_uri=uri,
                              storage=str(root / "ray"))), progress=print_fn)
        searched = {"task": task, "model": "searched", "test_dice": result.best["test_accuracy"],
                    "test_hd95": result.best.get("test_hd95"), "arch": result.best["arch"],
                    "seconds": round(time.time() - started, 1)}
        data = load_dataset(dataset, seed)
        started = time.time()
        fixed = monai_unet(result.best["arch"], data, retrain_epochs, seed)
        unet = {"task": task, "model": "MONAI UNet", "test_dice": fixed.test_accuracy,
                "test_hd95": fixed.test_scores.get("hd95"),
                "seconds": round(time.time() - started, 1)}
        started = time.time()
        cut = threshold_scores(data)
        threshold = {"task": task, "model": "threshold", "test_dice": cut["dice"],
                     "test_hd95": cut.get("hd95"), "seconds": round(time.time() - started, 1)}
        rows += [searched, unet, threshold]
        for row in (searched, unet, threshold):
            hd95 = row["test_hd95"]
            print_fn(f"{task}: {row['model']:>16}: test Dice {row['test_dice']:.3f}, HD95 "
                     f"{'-' if hd95 is None else f'{hd95:.1f}'} voxels, {row['seconds']:.0f} s")
    first = [r for r in rows if r["task"] == next(iter(datasets))]
    report = Report(
        "medical", first[0]["test_dice"] / max(max(r["test_dice"] for r in first[1:]), 1e-9),
        "test Dice of the searched network / the better baseline's (MONAI U-Net, threshold) "
        "on the first task (higher is better)", "> 1", rows, host,
        settings={"datasets": datasets, "trials": trials, "max_epochs": max_epochs,
                  "retrain_epochs": retrain_epochs, "seed": seed, "strategy": strategy})
    report.write(output, print_fn)
    return report


def main(args: argparse.Namespace) -> None:
    """``raynas bench medical``: its flags checked, the real MRI written, then ``run``."""
    if min(args.trials, args.max_epochs, args.retrain_epochs) < 1 or args.spacing <= 0:
        raise ConfigError("raynas bench medical: --trials, --max-epochs and --retrain-epochs "
                          "must be >= 1, --spacing > 0")
    unknown = sorted(set(args.tasks) - {"brain", "aal"})
    if unknown and args.dataset is None:
        raise ConfigError(f"raynas bench medical: --tasks: unknown task {unknown[0]!r}; "
                          "known: brain, aal")
    with tempfile.TemporaryDirectory(prefix="raynas-bench-medical-") as folder:
        root = Path(folder).resolve()
        if args.dataset is not None:
            datasets = {"dataset": args.dataset}
        else:
            written = write(root / "real-mri")
            datasets = {task: f"nifti:{written[task]}:spacing={args.spacing:g}:cache="
                              f"{root / 'cache'}" for task in args.tasks}
        run(datasets, args.trials, args.max_epochs, args.retrain_epochs, args.seed,
            args.strategy, root, Path(args.output))
