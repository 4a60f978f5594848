"""A search as one experiment: ``resolve`` the settings once, ``plan`` the strategy and the
scheduler, ``build_tuner``, run it, pick the best, retrain it and log the model; ``--resume``,
``extend`` and ``sync`` go on from a search's folder (``state``); ``retrain`` and ``export``
work on what a search found."""

from __future__ import annotations

from typing import Any

__all__ = ["extend", "resolve", "search", "sync"]


def __getattr__(name: str) -> Any:
    # Lazy: resolving settings (the CLI's error path) must not import Ray or MLflow.
    if name in ("search", "extend", "sync"):
        from raynas.experiment import driver

        return getattr(driver, name)
    if name == "resolve":
        from raynas.experiment.resolve import resolve

        return resolve
    raise AttributeError(name)
