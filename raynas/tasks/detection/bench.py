"""``raynas bench detection``: what a detection search finds, against a fixed baseline detector
trained the same way.

The search is the README's: ``raynas search --space detection`` with TPE and ASHA on epochs.
Two fixed detectors are trained by the same final training as the search's best (the same
function, epochs, seed, hyperparameters and train+val images or tiles) and tested on the same
held-out images: the baseline, one hand-written architecture of the same space
(``search_spaces/detection_baseline.json``: a three-layer CNN, an FPN on its two deepest scales
and an FCOS head), and a reference from torchvision itself, its FCOS or RetinaNet on a
ResNet-18 with an FPN (``reference``), from scratch. ``--input-scale`` sets both fixed
detectors' input size (the search chooses its own). Each seed draws its own data split. The
ratio is the searched detectors' mean test mAP@.5 over the better fixed detector's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from torch import nn
from torchvision.models import resnet18
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from raynas.bench.common import Print, Report, machine
from raynas.config import SearchConfig, Tracking
from raynas.errors import ConfigError
from raynas.estimation import load_space
from raynas.estimation.fidelity import Fidelity
from raynas.estimation.train import TrialSettings
from raynas.experiment.driver import search
from raynas.space import Space, arch_hash, builtin_dir
from raynas.tasks.detection.data import DetectionData, load_detection, write_synthetic
from raynas.tasks.detection.model import DETECTIONS, MAX_INPUT_SCALE, SCORE_THRESH
from raynas.tasks.detection.train import retrain_detector
from raynas.tracking.store import connect

#: The baseline's file: ``raynas retrain`` trains it as the bench does.
BASELINE_FILE = "detection_baseline.json"
SCORES = ("map_50", "map")
EXPERIMENT = "bench-detection"
REFERENCES = ("fcos", "retinanet")
#: The reference's FPN width: torchvision's 256 is for COCO on GPUs; 64 trains on a CPU.
REFERENCE_CHANNELS = 64
FIXED = ("baseline", "reference")


def baseline_arch(space: Space, input_scale: float = 1.0) -> dict[str, Any]:
    """The baseline file's architecture in ``space``, at ``input_scale`` if the space has
    that knob (``detection_tiles``)."""
    arch = json.loads((builtin_dir() / BASELINE_FILE).read_text())
    if space.domain("input_scale") is not None:
        arch["input_scale"] = input_scale
    elif input_scale != 1:
        raise ConfigError(f"--input-scale {input_scale}: the space {space.name} has no "
                          "input_scale (detection_tiles has)")
    return space.validate({**arch, "space": space.name})


def reference(data: DetectionData, head: str, input_scale: float) -> nn.Module:
    """torchvision's FCOS or RetinaNet on a ResNet-18 with an FPN on its last three stages
    and P6, P7 above (as torchvision's ``fcos_resnet50_fpn`` and ``retinanet_resnet50_fpn``
    build them), from scratch: trainable BatchNorm (torchvision freezes it, for pretrained
    weights), and the input resized as the searched detectors' by ``input_scale``."""
    trunk = resnet18(weights=None)
    backbone = BackboneWithFPN(
        trunk, {"layer2": "0", "layer3": "1", "layer4": "2"}, [128, 256, 512],
        REFERENCE_CHANNELS, LastLevelP6P7(REFERENCE_CHANNELS, REFERENCE_CHANNELS))
    _, h, w = data.input_shape
    sizes = {"min_size": round(min(h, w) * input_scale), "max_size": round(max(h, w) * input_scale)}
    if head == "fcos":
        return FCOS(backbone, data.num_classes, score_thresh=SCORE_THRESH,
                    detections_per_img=DETECTIONS, **sizes)
    return RetinaNet(backbone, data.num_classes, score_thresh=SCORE_THRESH,
                     detections_per_img=DETECTIONS, **sizes)


def run(dataset: str | None, trials: int, max_epochs: int, retrain_epochs: int, seeds: int,
        output: Path, strategy: str = "tpe", print_fn: Print = print,
        reference_head: str = "fcos", input_scale: float = 1.0, space_name: str = "detection"
        ) -> Report:
    """Per seed: the search (its best retrained ``retrain_epochs`` epochs), the baseline and
    the torchvision reference trained as long; on ``dataset`` or, without one, on ``raynas data
    synth-detection``'s."""
    host = machine()
    space = load_space(space_name)
    baseline = baseline_arch(space, input_scale)
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
                space=space_name, dataset=dataset, strategy=strategy, scheduler="asha",
                num_trials=trials, max_epochs=max_epochs, retrain_epochs=retrain_epochs,
                seed=seed, tracking=Tracking(experiment=EXPERIMENT, tracking_uri=uri,
                                             storage=str(root / "ray"))),
                progress=print_fn)
            rows.append({"seed": seed, "detector": "searched",
                         "arch_hash": result.best["arch_hash"], **_parts(result.best["arch"]),
                         **{f"test_{k}": result.best[f"test_{k}"] for k in SCORES},
                         "seconds": round(time.time() - started, 1)})
            data = load_detection(dataset, seed=seed)
            settings = TrialSettings(Fidelity(retrain_epochs), seed)
            for name in FIXED:
                started = time.time()
                model = reference(data, reference_head, input_scale) if name == "reference" \
                    else None
                fixed = retrain_detector(space, baseline, data, retrain_epochs, settings, model)
                parts = ({"head": reference_head, "neck": "fpn", "levels": 5,
                          "layers": "resnet18"} if model is not None else _parts(baseline))
                rows.append({"seed": seed, "detector": name,
                             "arch_hash": arch_hash(baseline) if model is None else "",
                             **parts, **{f"test_{k}": fixed.test_scores[k] for k in SCORES},
                             "seconds": round(time.time() - started, 1)})
            print_fn(f"seed {seed}: test mAP@.5 searched {rows[-3]['test_map_50']:.3f} "
                     f"(search + retraining {rows[-3]['seconds']:.0f} s), baseline "
                     f"{rows[-2]['test_map_50']:.3f} (training {rows[-2]['seconds']:.0f} s), "
                     f"torchvision {reference_head} ResNet-18-FPN {rows[-1]['test_map_50']:.3f} "
                     f"(training {rows[-1]['seconds']:.0f} s)")
    mean = {d: {k: statistics.fmean(r[f"test_{k}"] for r in rows if r["detector"] == d)
                for k in SCORES} for d in ("searched", *FIXED)}
    for d in mean:
        print_fn(f"{d}: mean test mAP@.5 {mean[d]['map_50']:.3f}, mAP@[.5:.95] "
                 f"{mean[d]['map']:.3f} over {seeds} seeds")
    best_fixed = max(mean[d]["map_50"] for d in FIXED)
    report = Report(
        "detection", mean["searched"]["map_50"] / max(best_fixed, 1e-9),
        "test mAP@.5 of the searched detector / the better fixed detector's (the baseline "
        "file's, torchvision's ResNet-18-FPN; higher is better)",
        "> 1", rows, host, summary={"mean": mean},
        settings={"dataset": dataset, "trials": trials, "max_epochs": max_epochs,
                  "retrain_epochs": retrain_epochs, "seeds": seeds, "strategy": strategy,
                  "reference": reference_head, "input_scale": input_scale, "space": space_name})
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
    if not 0 < args.input_scale <= MAX_INPUT_SCALE:
        raise ConfigError(f"raynas bench detection: --input-scale must be in (0, "
                          f"{MAX_INPUT_SCALE}], got {args.input_scale}")
    run(args.dataset, args.trials, args.max_epochs, args.retrain_epochs, args.seeds,
        Path(args.output), args.strategy, reference_head=args.reference,
        input_scale=args.input_scale, space_name=args.space)
