"""``raynas compare``: what changed between two architectures, read from their MLflow runs.

Lists (a macro network's ``layers``) are aligned item by item with an edit distance in which
changing an item costs the share of its fields that differ (changing every field costs as much
as removing it and adding another). ``difflib`` aligns equal items only, so it would pair a
changed layer next to an inserted one with the wrong partner. A group of plain fields (a layer,
``train``, a cell) is one line of field changes.
"""

from __future__ import annotations

from typing import Any

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from raynas.errors import ConfigError
from raynas.report.search import COSTS, architecture


def _flat(value: Any) -> bool:
    return isinstance(value, dict) and not any(isinstance(v, dict | list) for v in value.values())


def _fields(item: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in item.items())


def _changes(a: dict[str, Any], b: dict[str, Any]) -> str:
    keys = [*a, *(k for k in b if k not in a)]
    return ", ".join(f"{k} {a.get(k, '-')} -> {b.get(k, '-')}" for k in keys
                     if a.get(k) != b.get(k))


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Lines ``+ path: fields`` (only in b), ``- path: fields`` (only in a), ``~ path: field
    old -> new`` (changed); none when a and b are equal."""
    if a == b:
        return []
    if _flat(a) and _flat(b):
        return [f"~ {path}: {_changes(a, b)}"]
    if isinstance(a, dict) and isinstance(b, dict):
        return [line for k in [*a, *(k for k in b if k not in a)]
                for line in _side(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))]
    if isinstance(a, list) and isinstance(b, list):
        return _sequence(a, b, path)
    return [f"~ {path}: {a} -> {b}"]


def _side(a: Any, b: Any, path: str) -> list[str]:
    if a is None:
        return [f"+ {path}: {_fields(b) if isinstance(b, dict) else b}"]
    if b is None:
        return [f"- {path}: {_fields(a) if isinstance(a, dict) else a}"]
    return diff(a, b, path)


def _cost(a: Any, b: Any) -> float:
    """0 for equal items, 2 (a removal plus an addition) for entirely different ones."""
    if a == b:
        return 0.0
    if isinstance(a, dict) and isinstance(b, dict):
        keys = a.keys() | b.keys()
        return 2 * sum(a.get(k) != b.get(k) for k in keys) / len(keys)
    return 2.0


def _sequence(a: list, b: list, path: str) -> list[str]:
    n, m = len(a), len(b)
    # best[i][j]: the cheapest way to turn a[i:] into b[j:]
    best = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(n, -1, -1):
        for j in range(m, -1, -1):
            if i < n or j < m:
                best[i][j] = min(
                    best[i + 1][j] + 1 if i < n else float("inf"),
                    best[i][j + 1] + 1 if j < m else float("inf"),
                    best[i + 1][j + 1] + _cost(a[i], b[j]) if i < n and j < m else float("inf"))
    lines, i, j = [], 0, 0
    while i < n or j < m:
        if i < n and j < m and best[i][j] == best[i + 1][j + 1] + _cost(a[i], b[j]):
            where = f"{path}.{i}" + (f" (B: {path}.{j})" if i != j else "")
            lines += diff(a[i], b[j], where)
            i, j = i + 1, j + 1
        elif i < n and best[i][j] == best[i + 1][j] + 1:
            lines += _side(a[i], None, f"{path}.{i}")
            i += 1
        else:
            lines += _side(None, b[j], f"{path}.{j}")
            j += 1
    return lines


def _delta(name: str, a: float | None, b: float | None) -> str:
    def shown(v: float | None) -> str:
        return "-" if v is None else f"{v:,.0f}"

    line = f"{name}: {shown(a)} -> {shown(b)}"
    if a is not None and b is not None:
        line += f" ({b - a:+,.0f}" + (f", {(b - a) / a:+.1%})" if a else ")")
    return line


def _run(client: MlflowClient, run_id: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException:
        raise ConfigError(f"RUN_ID: no run {run_id!r} in {client.tracking_uri}") from None


def compare(client: MlflowClient, run_a: str, run_b: str) -> str:
    """The report ``raynas compare`` prints: which runs, the structural diff (A -> B), and the
    change in parameters and FLOPs."""
    runs = [_run(client, r) for r in (run_a, run_b)]
    arch_a, arch_b = (architecture(client, r) for r in (run_a, run_b))
    lines = [f"{side}: run {run.info.run_id} ({run.info.run_name}, arch "
             f"{run.data.tags.get('raynas.arch_hash', '-')})" for side, run in zip("AB", runs,
                                                                                  strict=True)]
    lines += diff(arch_a, arch_b) or ["the architectures are the same"]
    lines += [_delta(cost, *(run.data.metrics.get(cost) for run in runs)) for cost in COSTS]
    return "\n".join(lines)
