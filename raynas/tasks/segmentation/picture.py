"""A segmentation at a glance: for a few test volumes, the slice with the most foreground, its
ground-truth mask and the model's prediction side by side (a PNG logged beside the final model,
so the result can be seen in the MLflow UI)."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from matplotlib.figure import Figure

SHOWN = 3  # test volumes in the picture


def slices_of_first(images: np.ndarray, masks: np.ndarray,
                    predict: Callable[[np.ndarray], np.ndarray]) -> bytes:
    """The picture of the final model (``Problem.picture``): ``slices_png`` of the first
    ``SHOWN`` test volumes."""
    return slices_png(images[:SHOWN], masks[:SHOWN], predict(images[:SHOWN]))


def slices_png(images: np.ndarray, masks: np.ndarray, predicted: np.ndarray) -> bytes:
    """``images`` (N, C, D, H, W), ``masks`` and ``predicted`` (N, D, H, W) -> a PNG of N rows:
    image (first channel), ground truth, prediction, each at the depth where the mask has the
    most foreground."""
    classes = max(int(masks.max()), int(predicted.max()), 1)
    fig = Figure(figsize=(7.5, 2.5 * len(images)), dpi=80)
    axes = fig.subplots(len(images), 3, squeeze=False)
    for row, (image, mask, guess) in enumerate(zip(images, masks, predicted, strict=True)):
        depth = int(np.argmax((mask > 0).reshape(len(mask), -1).sum(1)))
        for ax, picture, title, style in (
                (axes[row, 0], image[0, depth], "image", {"cmap": "gray"}),
                (axes[row, 1], mask[depth], "ground truth", {"cmap": "viridis", "vmin": 0,
                                                             "vmax": classes}),
                (axes[row, 2], guess[depth], "prediction", {"cmap": "viridis", "vmin": 0,
                                                            "vmax": classes})):
            ax.imshow(picture, interpolation="nearest", **style)
            ax.set_title(f"{title} (volume {row}, slice {depth})", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
