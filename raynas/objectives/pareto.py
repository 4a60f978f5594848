"""Objectives given as ``METRIC:max|min`` and the Pareto front of a multi-objective search."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from raynas.errors import ConfigError, did_you_mean
from raynas.objectives.metrics import known

Objective = tuple[str, str]


def parse_objectives(texts: Sequence[str] | None, default: Sequence[str]) -> list[Objective]:
    """``["val_accuracy:max", "params:min"]`` -> ``[("val_accuracy", "max"), ...]``."""
    out: list[Objective] = []
    for text in texts or default:
        metric, _, mode = text.rpartition(":")
        if not metric or mode not in ("max", "min"):
            raise ConfigError(f"--objective: {text!r} is not METRIC:max or METRIC:min")
        if metric not in known():
            raise ConfigError(f"--objective: no trial reports {metric!r}"
                              f"{did_you_mean(metric, known())}; known: {', '.join(known())}")
        if any(metric == m for m, _ in out):
            raise ConfigError(f"--objective: {metric!r} given twice")
        out.append((metric, mode))
    return out


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """``a`` is at least as good as ``b`` in every objective and better in one."""
    signed = [(x, y) if m == "max" else (-x, -y) for x, y, m in zip(a, b, modes, strict=True)]
    return all(x >= y for x, y in signed) and any(x > y for x, y in signed)


def pareto_front(rows: Sequence[dict[str, Any]], objectives: Sequence[Objective]
                 ) -> list[dict[str, Any]]:
    """The rows (dicts holding every objective's metric) no other row dominates, sorted by the
    first objective, best first. O(n^2): a search has hundreds of trials, not millions."""
    metrics = [m for m, _ in objectives]
    modes = [mode for _, mode in objectives]
    rows = [r for r in rows if all(isinstance(r.get(m), int | float) for m in metrics)]
    points = [[float(r[m]) for m in metrics] for r in rows]
    front = [r for r, p in zip(rows, points, strict=True)
             if not any(dominates(q, p, modes) for q in points)]
    first, mode = objectives[0]
    return sorted(front, key=lambda r: r[first], reverse=mode == "max")


def pareto_plot(rows: Sequence[dict[str, Any]], front: Sequence[dict[str, Any]],
                objectives: Sequence[Objective]) -> bytes:
    """A PNG: every trial on the first two objectives, the front highlighted."""
    (x, x_mode), (y, y_mode) = objectives[0], objectives[1]
    fig = Figure(figsize=(6, 4.5))  # no pyplot: no global figure manager, no backend to pick
    ax = fig.subplots()
    ax.scatter([r[x] for r in rows], [r[y] for r in rows], s=14, c="0.6", label="trials")
    ax.plot([r[x] for r in front], [r[y] for r in front], "o-", c="C3", label="Pareto front")
    ax.set_xlabel(f"{x} ({x_mode})")
    ax.set_ylabel(f"{y} ({y_mode})")
    if y in ("params", "flops"):
        ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def front_table(pareto: dict[str, Any]) -> str:
    """The front as an aligned text table, best first by the first objective."""
    metrics = [text.rpartition(":")[0] for text in pareto["objectives"]]
    columns = ["trial_id", "arch_hash", *metrics]
    rows = [[f"{row.get(c):.6g}" if isinstance(row.get(c), float) else str(row.get(c, "-"))
             for c in columns] for row in pareto["front"]]
    header = ["trial_id", "arch_hash", *pareto["objectives"]]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
             for r in (header, *rows)]
    lines.append(f"{len(rows)} non-dominated of {pareto['num_trials']} feasible trials")
    return "\n".join(lines)
