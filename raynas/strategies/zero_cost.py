"""The ``zero_cost`` strategy: rank many sampled architectures by a zero-cost proxy, train only
the best-scored few.

Scoring takes milliseconds to a second per candidate, so it runs as batched Ray tasks (one task
per chunk of candidates, the mini-batch shared through the object store) rather than as Tune
trials, whose per-trial overhead would exceed the work. The top-k then go through the normal
Tune path: a ``BasicVariantGenerator`` that proposes exactly those architectures.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raynas.errors import ConfigError, did_you_mean
from raynas.space import Arch, Space, arch_hash
from raynas.strategies.base import OPTION, Plan, StrategyContext

if TYPE_CHECKING:
    from raynas.data import Dataset
import ray
import torch
from ray.tune.search.basic_variant import BasicVariantGenerator

from raynas.estimation.proxies import PROXIES, minibatch, score

SCORES_FILE = "zero_cost_scores.json"
TASKS_PER_CPU = 2  # chunks per CPU: enough to balance uneven candidates, few enough to batch


@dataclass(frozen=True)
class ZeroCostOptions:
    """``--strategy-option`` of ``zero_cost``."""

    proxy: str = field(default="synflow", metadata={
        "help": "the zero-cost proxy that ranks the candidates: synflow, snip, grad_norm, "
                "naswot or params"})
    candidates: int = field(default=1000, metadata={
        "help": "architectures sampled and scored (fewer if the space has fewer)"})
    top_k: int = field(default=8, metadata={
        "help": "the best-scored ones, trained through Tune (the number of trials)"})

    def __post_init__(self) -> None:
        if self.proxy not in PROXIES:
            raise ConfigError(f"{OPTION} proxy: unknown zero-cost proxy {self.proxy!r}"
                              f"{did_you_mean(self.proxy, PROXIES)}; known: {', '.join(PROXIES)}")
        if not 1 <= self.top_k <= self.candidates:
            raise ConfigError(f"{OPTION} top_k: must be between 1 and candidates "
                              f"({self.candidates}), got {self.top_k}")


def check_zero_cost_settings(resolved: Any) -> None:
    """``--num-trials`` is the top-k here: only the same number, or none."""
    num_trials = resolved.config.num_trials
    if num_trials is not None and num_trials != resolved.options.top_k:
        raise ConfigError(f"--num-trials: --strategy zero_cost trains the top_k best-scored "
                          f"architectures; set {OPTION} top_k={num_trials} instead")


def sample_candidates(space: Space, count: int, seed: int) -> list[Arch]:
    """Up to ``count`` distinct architectures (fewer if the space has fewer)."""
    rng = random.Random(seed)
    found: dict[str, Arch] = {}
    for _ in range(20 * count):
        if len(found) == count:
            break
        arch = space.sample(rng)
        found.setdefault(arch_hash(arch), arch)
    return list(found.values())


def score_chunk(space: Space, archs: list[Arch], proxy: str, batch: tuple[Any, Any],
                num_classes: int, seed: int) -> list[dict[str, Any]]:
    """One Ray task: score a chunk of candidates on the shared mini-batch."""
    torch.set_num_threads(1)
    x, y = (torch.as_tensor(a) for a in batch)
    task_id = ray.get_runtime_context().get_task_id()
    rows = []
    for arch in archs:
        started = time.perf_counter()
        value = score(space, arch, proxy, x, y, num_classes, seed)
        rows.append({"arch_hash": arch_hash(arch),
                     "score": value if math.isfinite(value) else None,
                     "seconds": time.perf_counter() - started, "task_id": task_id})
    return rows


def score_candidates(space: Space, archs: list[Arch], data: Dataset, proxy: str,
                     seed: int) -> list[dict[str, Any]]:
    """Score every candidate with Ray tasks over chunks; rows in the order of ``archs``."""
    batch = ray.put(minibatch(data.x_train, data.y_train, seed))
    chunks = max(1, min(len(archs), TASKS_PER_CPU * int(ray.cluster_resources().get("CPU", 1))))
    size = math.ceil(len(archs) / chunks)
    task = ray.remote(score_chunk).options(num_cpus=1)
    refs = [task.remote(space, archs[i: i + size], proxy, batch, data.num_classes, seed)
            for i in range(0, len(archs), size)]
    return [row for rows in ray.get(refs) for row in rows]


def plan(ctx: StrategyContext) -> Plan:
    """Sample and score ``candidates`` architectures, then train the ``top_k`` best-scored."""
    settings: ZeroCostOptions = ctx.options
    if ctx.data is None:
        raise ConfigError("--strategy zero_cost: needs the dataset to score candidates on")
    started = time.time()
    archs = sample_candidates(ctx.space, settings.candidates, ctx.seed)
    rows = score_candidates(ctx.space, archs, ctx.data, settings.proxy, ctx.seed)
    seconds = time.time() - started
    order = sorted(range(len(rows)), reverse=True,  # a non-finite score (None) ranks last
                   key=lambda i: -math.inf if rows[i]["score"] is None else rows[i]["score"])
    top = order[: settings.top_k]
    for rank, i in enumerate(order, start=1):
        rows[i].update(rank=rank, selected=rank <= settings.top_k, arch=archs[i])
    metric = f"zc_{settings.proxy}"
    searcher = BasicVariantGenerator(points_to_evaluate=[ctx.space.encode(archs[i]) for i in top],
                                     max_concurrent=ctx.concurrency)
    report = {"proxy": settings.proxy, "candidates": len(rows), "top_k": len(top),
              "scoring_seconds": round(seconds, 2),
              "tasks": len({r["task_id"] for r in rows}), "scores": rows}
    return Plan(searcher, ctx.space.to_tune(), len(top),
                notes={"zc_proxy": settings.proxy, "zc_candidates": str(len(rows)),
                       "zc_scoring_s": f"{seconds:.1f}"},
                artifacts={SCORES_FILE: report},
                arch_metrics={rows[i]["arch_hash"]: {metric: rows[i]["score"]} for i in top
                              if rows[i]["score"] is not None})
