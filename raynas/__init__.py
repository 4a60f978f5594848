"""raynas: Neural Architecture Search orchestrated by Ray Tune, tracked in MLflow."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["SearchConfig", "__version__", "load_dataset", "load_space", "search"]


def __getattr__(name: str):
    # Lazy: `import raynas` stays fast (the CLI's error paths never import Ray or torch).
    if name == "search":
        from raynas.experiment import search

        return search
    if name == "SearchConfig":
        from raynas.config import SearchConfig

        return SearchConfig
    if name == "load_space":
        from raynas.space import load_space

        return load_space
    if name == "load_dataset":
        from raynas.data import load_dataset

        return load_dataset
    raise AttributeError(name)

