"""How well predicted boxes match the true ones: COCO's mean average precision, computed by
torchmetrics' ``MeanAveragePrecision`` on the ``faster-coco-eval`` backend (box IoU).

``map`` is mAP@[.5:.95] (averaged over IoU thresholds 0.5, 0.55, ..., 0.95), ``map_50`` and
``map_75`` at one threshold each; all are -1 when the targets hold no box at all (COCO's
convention). Crowd boxes (``iscrowd``) are ignore regions, as COCO defines them.
"""

from __future__ import annotations

from typing import Any

import torch

from raynas.errors import ConfigError

SCORES = ("map", "map_50", "map_75")


class BoxMAP:
    """Mean average precision accumulated over batches: ``update`` with each batch's
    predictions (``boxes`` XYXY, ``scores``, ``labels`` per image) and targets (``boxes``,
    ``labels``), then ``compute``."""

    def __init__(self) -> None:
        try:
            from torchmetrics.detection import MeanAveragePrecision

            self.metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox",
                                               backend="faster_coco_eval")
        except (ImportError, ModuleNotFoundError) as exc:
            raise ConfigError(f"detection's mAP needs torchmetrics and faster-coco-eval ({exc}):"
                              " pip install 'raynas[detection]'") from None

    def update(self, predictions: list[dict[str, Any]], targets: list[dict[str, Any]]) -> None:
        """``targets`` may hold ``iscrowd`` per box: COCO's ignore regions, where a detection
        is neither a hit nor a false alarm."""
        def plain(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
            # tv_tensors.BoundingBoxes to plain tensors, on the CPU, out of any autograd graph
            return {k: d[k].detach().as_subclass(torch.Tensor).cpu() for k in keys if k in d}

        self.metric.update([plain(p, ("boxes", "scores", "labels")) for p in predictions],
                           [plain(t, ("boxes", "labels", "iscrowd")) for t in targets])

    def compute(self) -> dict[str, float]:
        result = self.metric.compute()
        return {k: float(result[k]) for k in SCORES}
