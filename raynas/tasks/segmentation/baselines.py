"""The fixed baselines a segmentation search must beat, scored like its networks:

- the best single intensity threshold, chosen on train+val: voxels brighter (or darker) than it
  are the most common foreground class, the rest background;
- MONAI's ``UNet`` as MONAI's 3-D spleen-segmentation tutorial configures it (residual units
  2, batch norm, channels doubling from 16), one level per halving the patch allows while
  keeping 2³ voxels at the bottom (16³ patches: channels 16, 32, 64, 128; ``BasicUNet``'s
  defaults halve four times, which a 16³ patch cannot take), trained by the same final
  training as the search's best: the same patches, epochs, seed, optimizer, learning rate
  and batch size.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from monai.networks.layers import Norm
from monai.networks.nets import UNet

from raynas.estimation.train import Retrained, device_for, hyperparameters, seed_everything
from raynas.tasks.segmentation.train import (
    Data,
    Segmenter,
    Split,
    evaluate,
    patch_of,
    train_final,
)

BINS = 512  # of the intensity histogram the threshold is chosen on
RANGE = (-6.0, 6.0)  # z-scored intensities: beyond 6 standard deviations is rare


def best_threshold(data: Data) -> tuple[float, bool, int]:
    """(threshold, brighter, class): the cut of the first channel's intensity, over train+val,
    whose prediction of ``class`` (the most common foreground class) has the highest Dice."""
    inside = np.zeros(BINS)  # voxels of the class, per intensity bin
    every = np.zeros(BINS)
    counts = np.zeros(data.num_classes)
    volumes = Split(data, ("train", "val")).dataset
    for volume in volumes:
        counts += np.bincount(volume["label"].numpy().ravel(), minlength=data.num_classes)
    target = int(np.argmax(counts[1:]) + 1)
    for volume in volumes:
        image = volume["image"][0].numpy().ravel()
        mask = volume["label"][0].numpy().ravel() == target
        every += np.histogram(image, BINS, RANGE)[0]
        inside += np.histogram(image[mask], BINS, RANGE)[0]
    edges = np.linspace(*RANGE, BINS + 1)
    best = (-1.0, 0.0, True)
    for brighter in (True, False):
        # predicted above (or below) each edge: suffix (prefix) sums of the histograms
        hit = np.cumsum(inside[::-1])[::-1] if brighter else np.cumsum(inside)
        said = np.cumsum(every[::-1])[::-1] if brighter else np.cumsum(every)
        dice = 2 * hit / np.maximum(said + inside.sum(), 1)
        k = int(np.argmax(dice))
        cut = edges[k] if brighter else edges[k + 1]
        if dice[k] > best[0]:
            best = (float(dice[k]), float(cut), brighter)
    return best[1], best[2], target


def threshold_scores(data: Data) -> dict[str, float]:
    """The threshold baseline's test scores (Dice per class and mean, HD95)."""
    cut, brighter, target = best_threshold(data)

    def infer(image: torch.Tensor) -> torch.Tensor:
        chosen = (image[:, :1] > cut) if brighter else (image[:, :1] <= cut)
        logits = torch.zeros(len(image), data.num_classes, *image.shape[2:])
        logits[:, :1] = 0.5
        logits[:, target:target + 1] = chosen.float()
        return logits

    return {**evaluate(infer, Split(data, ("test",)).dataset, data.num_classes, hd95=True),
            "threshold": cut, "brighter": float(brighter)}


def monai_unet(arch: dict[str, Any], data: Data, epochs: int, seed: int,
               gpus: float = 0.0) -> Retrained:
    """MONAI's UNet (see the module) trained as a search's best ``arch`` is: its training
    hyperparameters (patch, optimizer, learning rate, batch), epochs and seed."""
    hp = hyperparameters(arch)
    levels = max(2, int(math.log2(min(patch_of(hp, data)))) - 1)  # 16 -> 4 levels, 3 halvings
    model = UNet(spatial_dims=3, in_channels=data.input_shape[0], out_channels=data.num_classes,
                 channels=tuple(16 * 2**i for i in range(levels)), strides=(2,) * (levels - 1),
                 num_res_units=2, norm=Norm.BATCH)
    generator = seed_everything(seed, arch)
    run = Segmenter(model, hp, data, epochs, device_for(gpus), generator)
    return train_final(run, epochs)
